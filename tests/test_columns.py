"""The column carrier (jouled/columns.py): readings in, one time-ordered batch per series out, extras aligned."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from jouled.columns import ColumnSink, batches_from_rows
from jouled.model import Reading
from jouled.store.sqlite import SeriesKey


def test_drain_gives_one_batch_per_series_with_nan_for_absent_fields() -> None:
    sink = ColumnSink()
    sink.add("nvml", [Reading(1, "gpu0", 100.0, 5.0), Reading(1, "gpu1", 50.0)])
    sink.add("nvml", [Reading(2, "gpu0", None, 6.0)])
    assert len(sink) == 3
    got = {b.key: b for b in sink.drain("h")}
    assert len(sink) == 0 and sink.drain("h") == []
    g0 = got[SeriesKey("h", "nvml", "gpu0")]
    assert g0.time_ns.tolist() == [1, 2] and g0.time_ns.typecode == "q"  # array('q'): int64, no numpy
    assert g0.power_w[0] == 100.0 and math.isnan(g0.power_w[1]) and g0.energy_j.tolist() == [5.0, 6.0]
    g1 = got[SeriesKey("h", "nvml", "gpu1")]
    assert g1.power_w.tolist() == [50.0] and math.isnan(g1.energy_j[0])


def test_extras_that_come_and_go_stay_aligned_with_time() -> None:
    sink = ColumnSink()
    sink.add("s", [Reading(1, "d", 1.0)])
    sink.add("s", [Reading(2, "d", 1.0, extras={"util": 0.5})])
    sink.add("s", [Reading(3, "d", 1.0)])
    sink.add("s", [Reading(4, "d", 1.0, extras={"temp": 60.0, "util": 0.7})])
    (b,) = sink.drain("h")
    assert set(b.extras) == {"util", "temp"}
    for col in b.extras.values():
        assert len(col) == len(b.time_ns)
    util, temp = np.asarray(b.extras["util"]), np.asarray(b.extras["temp"])
    assert np.isnan(util[[0, 2]]).all() and util[[1, 3]].tolist() == [0.5, 0.7]
    assert np.isnan(temp[:3]).all() and temp[3] == 60.0


def test_threads_adding_while_a_drain_runs_lose_nothing() -> None:
    sink = ColumnSink()
    per_thread = 20_000
    stop = threading.Event()
    drained: list[int] = []

    def writer(dev: str) -> None:
        for i in range(per_thread):
            sink.add("s", [Reading(i, dev, float(i))])

    def drainer() -> None:
        while not stop.is_set():
            drained.extend(len(b) for b in sink.drain("h"))

    ts = [threading.Thread(target=writer, args=(f"d{k}",)) for k in range(4)]
    d = threading.Thread(target=drainer)
    d.start()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    stop.set()
    d.join()
    drained.extend(len(b) for b in sink.drain("h"))
    assert sum(drained) == 4 * per_thread


def test_rows_group_in_their_given_order() -> None:
    a, b = SeriesKey("h", "csv", "a"), SeriesKey("h", "csv", "b")
    out = batches_from_rows([(a, 3, 1.0, None, {}), (b, 1, None, 2.0, {}), (a, 4, 2.0, None, {"x": 1.0})])
    got = {x.key: x for x in out}
    assert got[a].time_ns.tolist() == [3, 4] and math.isnan(got[a].extras["x"][0]) and got[a].extras["x"][1] == 1.0
    assert got[b].energy_j.tolist() == [2.0]


def test_numbers_of_other_types_are_taken_as_their_values() -> None:
    """A third-party source may hand numpy scalars, int watts or a whole float time: stored as int64 / float64."""
    sink = ColumnSink()
    sink.add("s", [Reading(np.int64(5), "d", 100, np.float32(2.5), {"util": 50}),  # type: ignore[arg-type]
                   Reading(6.0, "d", 1.5, None)])  # type: ignore[arg-type]
    (b,) = sink.drain("h")
    assert b.time_ns.tolist() == [5, 6] and b.power_w.tolist() == [100.0, 1.5] and b.energy_j[0] == 2.5
    assert b.extras["util"][0] == 50.0 and math.isnan(b.extras["util"][1])


def test_a_reading_that_is_not_numeric_is_refused_whole_and_the_columns_stay_aligned() -> None:
    sink = ColumnSink()
    good = Reading(1, "d", 1.0, 1.0, {"util": 1.0})
    for bad in (Reading(2, "d", "300 W", 1.0), Reading(2, "d", 1.0, 1.0, {"util": "high"}),  # type: ignore[arg-type]
                Reading(2.5, "d", 1.0), Reading(None, "d", 1.0)):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^source s, device d: a reading that is not numeric .* was dropped$"):
            sink.add("s", [good, bad])
    (b,) = sink.drain("h")
    assert len(b.time_ns) == len(b.power_w) == len(b.energy_j) == len(b.extras["util"]) == 4  # the goods only
    # a bad reading in the middle: the readings after it are appended too, and counted
    with pytest.raises(ValueError, match=r"^source s, device d: a reading that is not numeric") as info:
        sink.add("s", [Reading(1, "d", 1.0), Reading(2, "d", "300 W"), Reading(3, "d", 3.0)])  # type: ignore[arg-type]
    assert info.value.added == (2, 1, 3) and len(sink) == 2  # type: ignore[attr-defined]
    (b,) = sink.drain("h")
    assert b.time_ns.tolist() == [1, 3] and b.power_w.tolist() == [1.0, 3.0]


def test_a_source_reusing_its_list_after_add_changes_nothing_drained() -> None:
    # add keeps the tick for the drain: it must keep its own list, not the source's
    sink = ColumnSink()
    tick = [Reading(1, "gpu0", 100.0)]
    assert sink.add("nvml", tick) == (1, 1, 1)
    tick.clear()
    tick.append(Reading(2, "gpu0", 200.0))
    (b,) = sink.drain("h")
    assert b.time_ns.tolist() == [1] and b.power_w.tolist() == [100.0]


def test_converted_readings_keep_their_place_among_the_others() -> None:
    sink = ColumnSink()
    sink.add("x", [Reading(1, "d", 1.0), Reading(np.int64(2), "d", np.float32(2.0)),  # type: ignore[arg-type]
                   Reading(3, "d", 3)])  # type: ignore[arg-type]
    (b,) = sink.drain("h")
    assert b.time_ns.tolist() == [1, 2, 3] and b.power_w.tolist() == [1.0, 2.0, 3.0]
