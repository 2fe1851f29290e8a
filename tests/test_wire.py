"""The frames between the request-handling processes and the engine (service/wire)."""

from __future__ import annotations

import numpy as np
import pytest

from service.models.kinds.sparse import SparseVector
from service.models.text import Encoded
from service.wire.frames import LENGTH, OUT_OF_BAND_BYTES, FrameError, FrameReader, decode, encode


def frame_bytes(message: object) -> bytes:
    return b"".join(encode(message))


def test_messages_round_trip_with_arrays_in_and_out_of_band() -> None:
    small = Encoded(np.arange(12, dtype=np.int64), np.zeros(12, dtype=np.int64))
    big = np.random.default_rng(0).normal(size=(64, 384)).astype(np.float32)
    sparse = SparseVector(np.array([3, 9]), np.array([0.5, 1.5]), ("cat", "dog"))
    message = [("submit", 7, "tiny/dense", [(12, small)]), ("done", 8, [big, sparse], 0.1, 0.2)]
    pieces = encode(message)
    assert len(pieces) == 2 and pieces[1].nbytes == big.nbytes  # the big array out of band
    assert small.ids.nbytes < OUT_OF_BAND_BYTES  # the small one inside the pickle
    (got,) = FrameReader().feed(b"".join(pieces))
    assert got[0][:3] == ("submit", 7, "tiny/dense")
    np.testing.assert_array_equal(got[0][3][0][1].ids, small.ids)
    vectors = got[1][2]
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
    messages = [[("cancel", i)] for i in range(5)] + [[("done", 9, [np.ones(2000)], 0, 0)]]
    stream = b"".join(frame_bytes(m) for m in messages)
    rng = np.random.default_rng(1)
    for _ in range(20):
        cuts = sorted(rng.choice(len(stream), size=6, replace=False))
        reader, got = FrameReader(), []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            got += reader.feed(stream[start:end])
        assert [m[0][0] for m in got] == ["cancel"] * 5 + ["done"]
        assert [m[0][1] for m in got[:5]] == list(range(5))
        np.testing.assert_array_equal(got[5][0][2][0], np.ones(2000))


def test_a_frame_that_does_not_add_up_is_refused() -> None:
    good = frame_bytes([("cancel", 1)])
    (size,) = LENGTH.unpack_from(good)
    with pytest.raises(FrameError):
        decode(good[LENGTH.size :] + b"extra")
    assert size == len(good) - LENGTH.size
