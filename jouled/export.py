"""Raw samples out of the chunked log, streamed in time slices: CSV (the import format), line protocol, parquet."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from jouled.store.reader import ReadStore
from jouled.store.sqlite import SeriesKey
from jouled.timefmt import format_time_ns

SLICE_NS = 600 * 1_000_000_000  # 10 min of every series at a time: memory stays bounded on a month-long log
CSV_COLUMNS = ("time", "host", "source", "device", "power_w", "energy_j")  # what `jouled import samples` reads


@dataclass
class Slice:
    """The samples of all series in one time slice, sorted by time (then series)."""

    time_ns: np.ndarray
    key_index: np.ndarray  # index into `keys`
    power_w: np.ndarray
    energy_j: np.ndarray
    keys: Sequence[SeriesKey]
    extras: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.time_ns.size)


def iter_slices(
    store: ReadStore,
    start_ns: int,
    end_ns: int,
    *,
    hosts: Sequence[str] | None = None,
    extras: bool = False,
    slice_ns: int = SLICE_NS,
) -> Iterator[Slice]:
    """Samples with start_ns <= time <= end_ns, one slice after another (each slice's samples sorted by time)."""
    keys = [k for k in store.series() if hosts is None or k.host in hosts]
    a = start_ns
    while a <= end_ns and keys:
        b = min(end_ns, a + slice_ns - 1)
        parts = []
        for i, k in enumerate(keys):
            d = store.read_series(k, a, b, extras=extras)
            if len(d):
                parts.append((i, d))
        if parts:
            t = np.concatenate([d.time_ns for _, d in parts])
            idx = np.concatenate([np.full(len(d), i, dtype=np.int64) for i, d in parts])
            p = np.concatenate([d.power_w for _, d in parts])
            e = np.concatenate([d.energy_j for _, d in parts])
            names = sorted({n for _, d in parts for n in d.extras})
            ex = {n: np.concatenate([d.extras.get(n, np.full(len(d), np.nan)) for _, d in parts]) for n in names}
            order = np.lexsort((idx, t))
            yield Slice(t[order], idx[order], p[order], e[order], keys, {n: v[order] for n, v in ex.items()})
        if b >= end_ns:
            break
        a = b + 1


def _num(v: float) -> str:
    return "" if math.isnan(v) else repr(float(v))


def write_csv(slices: Iterator[Slice], out: IO[str], *, rfc3339: bool = False) -> int:
    """CSV `time,host,source,device,power_w,energy_j`; time in integer ns (exact on re-import) or RFC 3339."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    n = 0
    for s in slices:
        tags = [(k.host, k.source, k.device) for k in s.keys]
        for t, i, p, e in zip(s.time_ns.tolist(), s.key_index.tolist(), s.power_w.tolist(), s.energy_j.tolist(),
                              strict=True):
            if p != p and e != e:  # neither field: nothing an importer could take
                continue
            w.writerow((format_time_ns(t) if rfc3339 else t, *tags[i], _num(p), _num(e)))
            n += 1
    return n


def _lp_escape_key(s: str) -> str:
    """Tag keys, tag values and field keys: escape backslash, comma, equals sign and space (line-protocol spec)."""
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def write_line_protocol(slices: Iterator[Slice], out: IO[str]) -> int:
    """InfluxDB line protocol: measurement `power`, tags host/source/device, float fields, ns timestamps."""
    n = 0
    for s in slices:
        heads = [
            f"power,host={_lp_escape_key(k.host)},source={_lp_escape_key(k.source)},device={_lp_escape_key(k.device)}"
            for k in s.keys
        ]
        extra_cols = [(_lp_escape_key(name), v.tolist()) for name, v in s.extras.items()]
        lines = []
        for j, (t, i, p, e) in enumerate(zip(s.time_ns.tolist(), s.key_index.tolist(), s.power_w.tolist(),
                                             s.energy_j.tolist(), strict=True)):
            fields = []
            if p == p:
                fields.append(f"power_w={float(p)!r}")
            if e == e:
                fields.append(f"energy_j={float(e)!r}")
            if not fields:
                continue
            fields.extend(f"{name}={float(col[j])!r}" for name, col in extra_cols if col[j] == col[j])
            lines.append(f"{heads[i]} {','.join(fields)} {t}\n")
        out.writelines(lines)
        n += len(lines)
    return n


def write_parquet(slices: Iterator[Slice], path: Path) -> int:
    """Parquet, one row group per slice: time (timestamp ns, UTC), host, source, device, power_w, energy_j."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("time", pa.timestamp("ns", tz="UTC")), ("host", pa.string()), ("source", pa.string()),
        ("device", pa.string()), ("power_w", pa.float64()), ("energy_j", pa.float64()),
    ])
    n = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        for s in slices:
            keep = ~(np.isnan(s.power_w) & np.isnan(s.energy_j))
            idx = s.key_index[keep]
            table = pa.table(
                {
                    "time": pa.array(s.time_ns[keep], type=pa.timestamp("ns", tz="UTC")),
                    "host": pa.array([s.keys[i].host for i in idx.tolist()], type=pa.string()),
                    "source": pa.array([s.keys[i].source for i in idx.tolist()], type=pa.string()),
                    "device": pa.array([s.keys[i].device for i in idx.tolist()], type=pa.string()),
                    "power_w": pa.array(s.power_w[keep], type=pa.float64(), from_pandas=True),
                    "energy_j": pa.array(s.energy_j[keep], type=pa.float64(), from_pandas=True),
                },
                schema=schema,
            )
            writer.write_table(table)
            n += table.num_rows
    return n
