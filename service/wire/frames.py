"""Frames between the request-handling processes and the engine, over a Unix socket.

A frame holds a list of messages (service/wire/connection.py sends what one turn of the
event loop produced as one frame); a message is a tuple of plain values (names, numbers,
the kinds' payload and result dataclasses), the frame's list pickled with protocol 5.
Numpy arrays of at least ``OUT_OF_BAND_BYTES`` travel out of band: their raw bytes follow
the pickle in the same frame and are read back as arrays over the received bytes, without a
copy (token ids, pixel arrays, vectors, never Python lists). Smaller arrays ride inside the
pickle, also as raw bytes: a separate buffer costs more than copying a few hundred bytes.

One frame: ``<u32 length of the rest>`` ``<u32 pickle bytes>`` ``<u32 buffer count>``
``<u64 size>`` per buffer, the pickle, the buffers.

Both ends are this service's own processes, started by its supervisor on a socket in a
directory only its user can enter; nothing else can connect, so unpickling is safe here.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

LENGTH = struct.Struct("<I")
HEADER = struct.Struct("<II")
SIZE = struct.Struct("<Q")
OUT_OF_BAND_BYTES = 4096
MAX_FRAME = 1 << 31  # a frame's length field is 32 bits


class FrameError(Exception):
    """The byte stream is not a sequence of frames (a bug, or a foreign peer)."""


def encode(message: Any) -> list[bytes | memoryview]:
    """The frame for one message, as pieces for ``transport.writelines``."""
    buffers: list[memoryview] = []

    def in_band(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < OUT_OF_BAND_BYTES:
            return True
        buffers.append(raw)
        return False

    body = pickle.dumps(message, protocol=5, buffer_callback=in_band)
    sizes = b"".join(SIZE.pack(buffer.nbytes) for buffer in buffers)
    rest = HEADER.size + len(sizes) + len(body) + sum(buffer.nbytes for buffer in buffers)
    if rest >= MAX_FRAME:
        raise FrameError(f"a message of {rest} bytes is over the frame limit")
    head = LENGTH.pack(rest) + HEADER.pack(len(body), len(buffers)) + sizes + body
    return [head, *buffers]


def decode(frame: bytes) -> Any:
    """One message from the bytes of a frame after its length field."""
    body_size, count = HEADER.unpack_from(frame)
    offset = HEADER.size
    sizes = [SIZE.unpack_from(frame, offset + i * SIZE.size)[0] for i in range(count)]
    offset += count * SIZE.size
    view = memoryview(frame)
    body = view[offset : offset + body_size]
    offset += body_size
    buffers = []
    for size in sizes:
        buffers.append(view[offset : offset + size])
        offset += size
    if offset != len(frame):
        raise FrameError(f"frame of {len(frame)} bytes holds {offset}")
    return pickle.loads(body, buffers=buffers)


class FrameReader:
    """Turns the chunks a socket delivers into whole messages."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        if not self._pending:
            messages, used = _whole_frames(data)
            if used < len(data):
                self._pending += data[used:]
            return messages
        self._pending += data
        messages, used = _whole_frames(bytes(self._pending))
        del self._pending[:used]
        return messages


def _whole_frames(data: bytes) -> tuple[list[Any], int]:
    """The messages of the complete frames at the start of `data`, and the bytes they took."""
    messages = []
    offset = 0
    while len(data) - offset >= LENGTH.size:
        (size,) = LENGTH.unpack_from(data, offset)
        end = offset + LENGTH.size + size
        if end > len(data):
            break
        messages.append(decode(data[offset + LENGTH.size : end]))
        offset = end
    return messages, offset
