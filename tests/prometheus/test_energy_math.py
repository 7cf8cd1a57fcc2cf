"""The pure parts of the Prometheus endpoint: the listen address and the energy-since-start counter."""

from __future__ import annotations

import numpy as np
import pytest

from jouled.daemon.prometheus import SeriesEnergy, add_chunks, add_samples, is_loopback, parse_listen
from jouled.errors import UserError

NAN = np.nan


def _arr(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float64)


def _t(*s: float) -> np.ndarray:
    return (np.array(s) * 1e9).astype(np.int64)


@pytest.mark.parametrize(("listen", "want"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("[::1]:9464", ("::1", 9464)),
    (":9464", ("", 9464)),
    ("localhost:1", ("localhost", 1)),
])
def test_parse_listen(listen: str, want: tuple[str, int]) -> None:
    assert parse_listen(listen) == want


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:0", "127.0.0.1:70000", "::1:9464"])
def test_parse_listen_refuses_with_the_key(listen: str) -> None:
    with pytest.raises(UserError) as e:
        parse_listen(listen)
    assert "[prometheus] listen" in str(e.value) and "\n" not in str(e.value)


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("") and not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7") and not is_loopback("gpu1")


def test_power_mode_is_the_trapezoid_across_calls() -> None:
    s = SeriesEnergy()
    add_samples(s, _t(0, 1), _arr(100, 200), _arr(NAN, NAN))
    assert s.total_j == pytest.approx(150)
    add_samples(s, _t(2, 4), _arr(200, 100), _arr(NAN, NAN))
    # the pair (1 s, 200 W)-(2 s, 200 W) joins the two calls: 150 + 200 + 300
    assert s.total_j == pytest.approx(650)
    assert s.last_power_w == 100 and not s.counter


def test_reading_a_chunk_twice_counts_it_once() -> None:
    s = SeriesEnergy()
    t, p, e = _t(0, 1, 2), _arr(100, 100, 100), _arr(NAN, NAN, NAN)
    add_samples(s, t, p, e)
    add_samples(s, t, p, e)  # the log compacted: the same samples under a new chunk id
    assert s.total_j == pytest.approx(200)


def test_counter_mode_sums_increases_and_skips_a_reset() -> None:
    s = SeriesEnergy()
    add_samples(s, _t(0, 1, 2), _arr(100, 100, 100), _arr(1000, NAN, 1200))  # counter read every other tick
    assert s.counter and s.total_j == pytest.approx(200)
    add_samples(s, _t(3, 4, 5), _arr(100, 100, 100), _arr(1300, 5, 105))  # driver reload: 1300 -> 5
    assert s.total_j == pytest.approx(200 + 100 + 0 + 100)


def test_counter_never_goes_backwards() -> None:
    rng = np.random.default_rng(7)
    s = SeriesEnergy()
    prev = 0.0
    t0 = 0
    for _ in range(50):
        n = int(rng.integers(1, 20))
        t = t0 + np.cumsum(rng.integers(1, 10**8, n))
        t0 = int(t[-1])
        p = np.where(rng.random(n) < 0.2, np.nan, rng.uniform(0, 400, n))
        e = np.where(rng.random(n) < 0.5, np.nan, rng.uniform(0, 1e6, n))
        add_samples(s, t, p, e)
        assert s.total_j >= prev
        prev = s.total_j


def test_a_batch_of_chunks_counts_as_the_chunks_one_by_one() -> None:
    """A scrape takes each series' new chunks in as few calls as it can (`add_chunks`): the same samples kept and
    the same total as chunk by chunk, with rewritten old chunks (compaction), chunks of nothing new, and the switch
    from power to the counter among them."""
    rng = np.random.default_rng(11)
    for trial in range(300):
        chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        t0 = 0
        for _ in range(int(rng.integers(1, 8))):
            n = int(rng.integers(1, 12))
            if chunks and rng.random() < 0.3:  # a rewrite of older samples under a new id
                start = int(rng.integers(0, t0 + 1))
            else:
                start = t0 + int(rng.integers(1, 10**8))
            t = start + np.cumsum(rng.integers(0 if rng.random() < 0.2 else 1, 10**8, n))  # repeats sometimes
            t0 = max(t0, int(t[-1]))
            p = np.where(rng.random(n) < 0.2, np.nan, rng.uniform(0, 400, n))
            e = np.where(rng.random(n) < 0.5, np.nan, rng.uniform(0, 1e6, n)) if trial % 2 else np.full(n, np.nan)
            chunks.append((t.astype(np.int64), p, e))
        one, batch = SeriesEnergy(last_t_ns=-1), SeriesEnergy(last_t_ns=-1)
        for t, p, e in chunks:
            add_samples(one, t, p, e)
        add_chunks(batch, chunks)
        assert batch.total_j == pytest.approx(one.total_j, rel=1e-12, abs=1e-9), trial
        assert (batch.last_t_ns, batch.counter) == (one.last_t_ns, one.counter), trial
        assert batch.last_energy_j == pytest.approx(one.last_energy_j, nan_ok=True)
        assert batch.last_power_w == pytest.approx(one.last_power_w, nan_ok=True)
        assert batch.last_power_t_ns == one.last_power_t_ns
