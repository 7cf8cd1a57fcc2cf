"""Where calibrations live: a versioned JSON file beside the log (`<log>.calibration.json`), with machine identity.

One file holds every calibration of the machine that writes the log, newest last, each numbered (`id`), dated and
tagged with the machine it was measured on; `jouled energy --holistic` uses the newest unless told otherwise.
Why a file and not the log's meta table: the log has one writer (the daemon, holding its lock) and `calibrate` runs
beside it as a client; a small JSON file can be read, diffed and copied to another log of the same machine, and
works for logs that are not SQLite (`--calibration FILE` / `[holistic] calibration`).
"""

from __future__ import annotations

import json
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jouled.errors import UserError
from jouled.timefmt import format_time_ns

from .calibfit import Fit

FORMAT = "jouled-calibration"
VERSION = 1  # the file's schema; bump when a field changes meaning


def calibration_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".calibration.json")


def machine_identity() -> dict[str, Any]:
    """What identifies the machine a calibration belongs to: host name, /etc/machine-id, CPU model and count."""
    mid = ""
    for p in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            mid = Path(p).read_text().strip()
            break
        except OSError:
            continue
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": socket.gethostname(), "machine_id": mid, "cpu_model": cpu or platform.processor(),
            "cpu_count": os.cpu_count() or 0}


@dataclass(frozen=True)
class Calibration:
    """One stored calibration: its number, when, on which machine, from which runs, and the fit."""

    id: int
    created: str
    created_ns: int
    machine: dict[str, Any]
    host: str  # the daemon's host tag the phases were measured under
    runs: list[str]
    tool: str  # what drove the loads: stress-ng or jouled's own
    points: list[dict[str, Any]]
    fit: Fit

    @property
    def label(self) -> str:
        kind = "calibrated" if self.fit.calibrated else "static fallback (no wall meter)"
        return f"calibration #{self.id} of {self.host}, {self.created[:19]}Z ({kind})"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "created_ns": self.created_ns, "machine": self.machine,
                "host": self.host, "runs": self.runs, "tool": self.tool, "points": self.points,
                "fit": self.fit.to_dict()}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Calibration:
        return Calibration(int(d["id"]), str(d["created"]), int(d["created_ns"]), dict(d.get("machine", {})),
                           str(d.get("host", "")), list(d.get("runs", [])), str(d.get("tool", "")),
                           list(d.get("points", [])), Fit.from_dict(d["fit"]))


def read_all(path: Path) -> list[Calibration]:
    """Every calibration in `path` (oldest first); [] when the file does not exist; UserError when unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise UserError(f"calibration file {path}: {e.strerror} — check its permissions") from None
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError("not a jouled calibration file")
        if int(doc.get("version", 0)) > VERSION:
            raise ValueError(f"written by a newer jouled (version {doc['version']} > {VERSION})")
        return [Calibration.from_dict(c) for c in doc.get("calibrations", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"calibration file {path}: {e} — run `jouled calibrate` again or give another file") from None


def append(path: Path, make: Any) -> Calibration:
    """Add a calibration (`make(next_id)` builds it) and rewrite the file atomically; returns what was added."""
    existing = read_all(path)
    cal: Calibration = make(max((c.id for c in existing), default=0) + 1)
    doc = {"format": FORMAT, "version": VERSION, "calibrations": [c.to_dict() for c in [*existing, cal]]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return cal


def pick(path: Path, which: int | None = None) -> Calibration | None:
    """The newest calibration in `path`, or number `which`; None when there is none (UserError for a bad number)."""
    cals = read_all(path)
    if which is None:
        return cals[-1] if cals else None
    for c in cals:
        if c.id == which:
            return c
    raise UserError(f"calibration #{which}: not in {path} — it holds {', '.join(f'#{c.id}' for c in cals) or 'none'}")


def now_stamp(ns: int) -> str:
    return format_time_ns(ns)
