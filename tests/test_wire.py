"""The frames between the request-handling processes and the engine (service/wire)."""

from __future__ import annotations

import numpy as np
import pytest

from service.models.catalogue import spec_from_dict
from service.models.kinds.sparse import SparseVector
from service.models.text import Encoded
from service.wire.frames import LENGTH, OUT_OF_BAND_BYTES, FrameError, FrameReader, decode, encode
from service.wire.messages import (
    Cancel,
    Done,
    Failed,
    ModelState,
    Status,
    Submit,
    from_wire,
    to_wire,
)


def frame_bytes(message: object) -> bytes:
    return b"".join(encode(message))


def test_messages_round_trip_with_arrays_in_and_out_of_band() -> None:
    small = Encoded(np.arange(12, dtype=np.int64), np.zeros(12, dtype=np.int64))
    big = np.random.default_rng(0).normal(size=(64, 384)).astype(np.float32)
    sparse = SparseVector(np.array([3, 9]), np.array([0.5, 1.5]), ("cat", "dog"))
    message = [Submit(7, "tiny/dense", [(12, small)]), Done(8, [big, sparse], 0.1, 0.2)]
    pieces = encode(message)
    assert len(pieces) == 2 and pieces[1].nbytes == big.nbytes  # the big array out of band
    assert small.ids.nbytes < OUT_OF_BAND_BYTES  # the small one inside the pickle
    (got,) = FrameReader().feed(b"".join(pieces))
    assert type(got[0]) is Submit and got[0][:2] == (7, "tiny/dense")
    np.testing.assert_array_equal(got[0].items[0][1].ids, small.ids)
    assert type(got[1]) is Done and got[1].rid == 8 and got[1].inference_s == 0.2
    vectors = got[1].results
    np.testing.assert_array_equal(vectors[0], big)
    assert not vectors[0].flags.writeable  # a view over the received bytes, not a copy
    assert vectors[1].tokens == ("cat", "dog") and list(vectors[1].indices) == [3, 9]


def test_payload_subclasses_keep_their_own_fields() -> None:
    from service.models.chunking import Windowed

    window = Windowed(np.arange(9, dtype=np.int64), None, spans=((1, 4), (4, 8)))
    ((got,),) = FrameReader().feed(frame_bytes([window]))
    assert type(got) is Windowed and got.spans == ((1, 4), (4, 8))
    np.testing.assert_array_equal(got.ids, window.ids)


def test_a_stream_cut_anywhere_gives_the_same_messages() -> None:
    messages = [[Cancel(i)] for i in range(5)] + [[Done(9, [np.ones(2000)], 0, 0)]]
    stream = b"".join(frame_bytes(m) for m in messages)
    rng = np.random.default_rng(1)
    for _ in range(20):
        cuts = sorted(rng.choice(len(stream), size=6, replace=False))
        reader, got = FrameReader(), []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            got += reader.feed(stream[start:end])
        assert [type(m[0]) for m in got] == [Cancel] * 5 + [Done]
        assert [m[0].rid for m in got[:5]] == list(range(5))
        np.testing.assert_array_equal(got[5][0].results[0], np.ones(2000))


def test_a_frame_that_does_not_add_up_is_refused() -> None:
    good = frame_bytes([Cancel(1)])
    (size,) = LENGTH.unpack_from(good)
    with pytest.raises(FrameError):
        decode(good[LENGTH.size :] + b"extra")
    assert size == len(good) - LENGTH.size


def test_token_id_items_pack_into_three_arrays_and_come_back_the_same() -> None:
    from service.wire.packing import pack_items, pack_results, unpack_items, unpack_results

    rng = np.random.default_rng(2)
    plain = [Encoded(rng.integers(0, 99, size=n)) for n in (3, 7, 1, 12, 5)]
    pairs = [Encoded(rng.integers(0, 99, size=n), rng.integers(0, 2, size=n)) for n in (4, 9, 2, 6)]
    for payloads in (plain, pairs):
        items = [(len(p) + 1, p) for p in payloads]
        packed = pack_items(items)
        assert packed[0] == "ids" and len(packed) == 5
        (back,) = FrameReader().feed(frame_bytes([packed]))
        got = unpack_items(back[0])
        assert [length for length, _ in got] == [length for length, _ in items]
        for (_, a), (_, b) in zip(got, items, strict=True):
            np.testing.assert_array_equal(a.ids, b.ids)
            assert (a.type_ids is None) == (b.type_ids is None)
            if a.type_ids is not None:
                np.testing.assert_array_equal(a.type_ids, b.type_ids)
    few = [(2, plain[0])]  # one input: as it is (packing would cost more)
    assert pack_items(few) == few
    vectors = [rng.normal(size=8).astype(np.float32) for _ in range(6)]
    stacked = pack_results(vectors)
    assert stacked[0] == "stacked" and stacked[1].shape == (6, 8)
    assert all(np.array_equal(a, b) for a, b in zip(unpack_results(stacked), vectors, strict=True))
    mixed = [*vectors[:4], SparseVector(np.array([1]), np.array([0.5]))]
    assert unpack_results(pack_results(mixed))[4].indices.tolist() == [1]


def test_every_message_type_round_trips_as_itself() -> None:
    spec = spec_from_dict(
        {"name": "tiny/dense", "kind": "dense", "dim": 8, "max_length": 16, "pooling": "mean",
         "source": {"local": "/models/tiny"}}
    )  # fmt: skip
    state = ModelState(spec, "/models/tiny", "fp32", {"min_cosine": 1.0}, "cpu", (2, 1), True)
    messages = [
        Submit(1, "tiny/dense", [(3, Encoded(np.arange(3), None))]),
        Cancel(1),
        Done(2, [np.ones(8, dtype=np.float32)], 0.001, 0.002),
        Failed(3, "Overloaded", "queue full", "queue_full", None, {"Retry-After": "1"}),
        Status(True, None, 1, {"tiny/dense": state}),
    ]
    (raw,) = FrameReader().feed(frame_bytes([to_wire(m) for m in messages]))
    assert all(type(r) is tuple for r in raw)  # plain tuples on the wire
    got = [from_wire(r) for r in raw]
    assert [type(m) for m in got] == [Submit, Cancel, Done, Failed, Status]
    assert got[3] == messages[3] and got[1] == messages[1] and got[2].rid == 2
    status = got[4]
    assert isinstance(status, Status) and status.ready
    assert status.models["tiny/dense"].spec == spec
    assert status.models["tiny/dense"].session_threads == (2, 1)
