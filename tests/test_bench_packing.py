"""bench.packing's pieces on made-up costs whose answers are known in closed form."""

from __future__ import annotations

import pytest

from bench.packing import (
    BATCHES,
    WIDTHS,
    call_overhead_tokens,
    closed_loop,
    interpolated,
    sorted_ceiling,
)


def linear_table(fixed_ms: float, per_token_ms: float) -> dict[tuple[int, int], float]:
    return {(b, w): fixed_ms + per_token_ms * b * w for b in BATCHES for w in WIDTHS}


def test_the_fixed_cost_of_a_call_is_read_back_in_tokens() -> None:
    assert call_overhead_tokens(linear_table(1.5, 0.1)) == pytest.approx(15.0)
    assert call_overhead_tokens(linear_table(0.0, 0.1)) == pytest.approx(0.0, abs=1e-9)


def test_interpolation_hits_the_grid_and_scales_beyond_it() -> None:
    table = linear_table(2.0, 0.01)
    cost = interpolated(table)
    assert cost(8, 64) == pytest.approx(table[(8, 64)])
    assert cost(3, 48) == pytest.approx(2.0 + 0.01 * 3 * 48)  # linear in both between points
    assert cost(8, 256) == pytest.approx(table[(8, 128)] * 2)
    assert cost(64, 32) == pytest.approx(table[(32, 32)] * 2)


def test_without_a_fixed_cost_or_padding_every_overhead_serves_the_same_rate() -> None:
    cost = interpolated(linear_table(0.0, 0.01))
    for overhead in (0.0, 16.0, 1e6):
        rate, _ = closed_loop([50] * 100, cost, overhead, clients=16, round_trip_ms=0.0)
        assert rate == pytest.approx(1000 / (0.01 * 50))


def test_a_large_fixed_cost_rewards_large_batches_and_padding_punishes_them() -> None:
    lengths = [10, 200] * 200
    fixed = interpolated(linear_table(50.0, 0.0001))
    tight, tight_size = closed_loop(lengths, fixed, 0.0, clients=32)
    loose, loose_size = closed_loop(lengths, fixed, 1e6, clients=32)
    assert loose_size > tight_size and loose > 1.5 * tight
    padded = interpolated(linear_table(0.0, 0.01))
    assert (
        closed_loop(lengths, padded, 0.0, clients=32)[0]
        > closed_loop(lengths, padded, 1e6, clients=32)[0]
    )


def test_the_sorted_ceiling_pads_nothing_when_lengths_sort_into_equal_batches() -> None:
    cost = interpolated(linear_table(0.0, 0.01))
    lengths = [16] * 64 + [64] * 64
    total_ms = 0.01 * (16 * 64 + 64 * 64)
    assert sorted_ceiling(lengths, cost, (8, 32)) == pytest.approx(128 / total_ms * 1000)


def test_sessions_side_by_side_each_take_batches_as_they_come_free() -> None:
    cost = interpolated(linear_table(0.0, 0.01))
    # batches of at most 8 from 32 clients: enough waiting for both sessions all the time
    one, _ = closed_loop([50] * 100, cost, 0.0, clients=32, round_trip_ms=0.0, max_items=8)
    two, _ = closed_loop(
        [50] * 100, cost, 0.0, clients=32, round_trip_ms=0.0, max_items=8, workers=2
    )
    assert one == pytest.approx(1000 / (0.01 * 50))
    assert two == pytest.approx(2 * one, rel=0.01)
    lengths = [16] * 64 + [64] * 64
    assert sorted_ceiling(lengths, cost, (8,), workers=2) == pytest.approx(
        2 * sorted_ceiling(lengths, cost, (8,))
    )
