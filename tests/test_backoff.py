"""jouled.backoff: exponential, capped, jittered delays (pure, seeded RNG) and the bounds each user keeps."""

from __future__ import annotations

import random

import pytest

from jouled.backoff import Backoff, capped_delay_s, jittered
from jouled.sampler import BACKOFF_MAX_S, BACKOFF_MIN_S, backoff_s
from jouled.sources.common import Backoff as DeviceBackoff


def test_doubles_from_the_minimum_up_to_the_cap() -> None:
    assert [capped_delay_s(n, 0.1, 2.0) for n in range(1, 8)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert capped_delay_s(0, 0.5, 5.0) == 0.5  # "retry 0" is the first one
    assert capped_delay_s(10**9, 0.5, 5.0) == 5.0  # no float overflow far past the cap
    assert capped_delay_s(3, 1.0, 100.0, factor=3.0) == 9.0


def test_no_jitter_is_the_capped_sequence_and_reset_starts_over() -> None:
    b = Backoff(0.05, 2.0, jitter="none")
    assert [b.next_delay() for _ in range(8)] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert b.failures == 8 and b.pending_delay() == 2.0 and b.failures == 8
    b.reset()
    assert b.failures == 0 and b.next_delay() == 0.05


def test_equal_and_full_jitter_with_a_seeded_rng() -> None:
    draws = [random.Random(7).random() for _ in range(1)]
    assert jittered(2.0, "equal", random.Random(7)) == pytest.approx(1.0 + draws[0])
    assert jittered(2.0, "full", random.Random(7)) == pytest.approx(2.0 * draws[0])
    a = Backoff(0.5, 5.0, jitter="equal", rng=random.Random(1))
    b = Backoff(0.5, 5.0, jitter="equal", rng=random.Random(1))
    assert [a.next_delay() for _ in range(10)] == [b.next_delay() for _ in range(10)]  # reproducible
    rng = random.Random(3)
    for n in range(1, 12):
        d = capped_delay_s(n, 0.5, 5.0)
        assert d / 2 <= Backoff(0.5, 5.0, rng=rng).delay_s(n) <= d
        assert 0 <= Backoff(0.5, 5.0, jitter="full", rng=rng).delay_s(n) <= d


def test_jitter_spreads_retriers_that_failed_together() -> None:
    rng = random.Random(11)
    delays = [Backoff(0.1, 2.0, rng=rng).delay_s(6) for _ in range(200)]
    assert max(delays) <= 2.0 and min(delays) >= 1.0 and max(delays) - min(delays) > 0.5


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(3.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(0.1, 1.0, factor=0.5)


def test_each_user_keeps_its_bounds() -> None:
    # source reads: 0.5 → 2 s
    assert BACKOFF_MIN_S == 0.5 and BACKOFF_MAX_S == 2.0
    assert all(0.25 <= backoff_s(1) <= 0.5 for _ in range(50))
    assert all(1.0 <= backoff_s(30) <= 2.0 for _ in range(50))
    # one lost device in a source: 0.5 → 5 s, plus when it may be tried again
    dev = DeviceBackoff(rng=random.Random(5))
    delays = [dev.fail("gone", now_s=100.0) for _ in range(10)]
    assert 0.25 <= delays[0] <= 0.5 and all(2.5 <= d <= 5.0 for d in delays[5:])
    assert dev.waiting(100.0) and not dev.waiting(100.0 + delays[-1]) and dev.last_error == "gone"
    dev.ok()
    assert dev.failures == 0 and not dev.waiting(100.0) and dev.last_error == ""
    assert DeviceBackoff(jitter=False).fail("x", 0.0) == 0.5
