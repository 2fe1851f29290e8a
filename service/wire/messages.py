"""The messages between a request-handling process and the engine process, and the rules of
their exchange. They travel in frames (frames.py), those of one event-loop turn together
(connection.py). Each is a named tuple in the code and a plain tuple on the wire, its type's
tag first (``to_wire``, ``from_wire``): pickle takes a named tuple through Python-level
reduction, 47 us for a frame of 14 answers against 3 us as plain tuples; with the
conversion both ways a frame of 14 costs 25 us against 6 (measured here, not in a test).

The protocol, over one Unix-socket connection per request-handling process:

1. A request-handling process connects to the engine's socket (``engine_link.py``), and keeps
   trying every 50 ms while there is no engine.
2. The engine sends ``Status`` first on every new connection: every model loaded so far, and
   whether all are ready. It sends ``Status`` again to every connection when that changes:
   once loading ends (all models loaded, or failed), and when it starts draining.
3. The process opens, from the latest ``Status``, every model it names and the process has not
   opened yet (tokenizer and resources; no sessions). A ``Status`` that arrives while models
   are opening is taken up by the same work, so no model named is ever missed. The process is
   ready when the latest ``Status`` says ready and every model is open.
4. The process sends ``Submit`` with items already prepared (token ids, pixels); the engine
   answers it with exactly one ``Done`` or ``Failed``, unless the process sends ``Cancel``
   first (its caller went away or timed out: the engine drops the items before they cost
   inference, and answers nothing).
5. A closed connection, from either side, ends every request on it: the engine cancels those
   still queued; the process fails every request it waits on with 503 ``engine_unavailable``,
   counts the engine not ready, reconnects, and begins again at 2 (a restarted engine sends
   its new ``Status``). Request ids are the process's own, counted over its lifetime and
   never reused, so an answer from an old connection can never be taken for a new request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, cast

if TYPE_CHECKING:
    from service.models.catalogue import ModelSpec


class Submit(NamedTuple):
    """Process to engine: run these items on `model` (``packing.pack_items``); `bulk`: in
    the batcher's bulk priority class (batch jobs, service/engine/priority.py)."""

    rid: int
    model: str
    items: Any
    bulk: bool = False


class Cancel(NamedTuple):
    """Process to engine: forget request `rid`; no answer follows."""

    rid: int


class Done(NamedTuple):
    """Engine to process: request `rid`'s results (``packing.pack_results``), with the
    seconds it waited in the queue and spent in inference."""

    rid: int
    results: Any
    queue_s: float
    inference_s: float


class Failed(NamedTuple):
    """Engine to process: request `rid` failed with this ``ServiceError`` (rebuilt as its own
    class by ``errors.rebuild``: the same status code and envelope in both modes)."""

    rid: int
    error_class: str
    message: str
    code: str | None
    param: str | None
    headers: dict[str, str]


class ModelState(NamedTuple):
    """One loaded model, as a process needs it to serve: its final spec (variant applied),
    directory, graph variant and what the converter measured of it, and its sessions."""

    spec: ModelSpec
    directory: str
    variant: str
    variant_check: dict[str, Any]
    provider: str
    session_threads: tuple[int, ...]
    alive: bool  # its batcher runs


class Status(NamedTuple):
    """Engine to process: every model loaded so far, and whether the engine is ready."""

    ready: bool
    error: str | None
    expected: int  # models the engine loads in all
    models: dict[str, ModelState]


ToEngine = Submit | Cancel
FromEngine = Done | Failed | Status
Message = ToEngine | FromEngine
MESSAGES: tuple[type[Message], ...] = (Submit, Cancel, Done, Failed, Status)
_TAGS = {kind: tag for tag, kind in enumerate(MESSAGES)}


def to_wire(message: Message) -> tuple[Any, ...]:
    """The message as a plain tuple, its type's tag first."""
    return (_TAGS[type(message)], *message)


def from_wire(raw: tuple[Any, ...]) -> Message:
    """The message a plain tuple from ``to_wire`` stands for."""
    return cast("Message", tuple.__new__(MESSAGES[raw[0]], raw[1:]))
