"""Marker pairs as windows: stored start/end markers → the spans (run, epoch, phase) whose energy is computed.

Pure: the pairing itself is `jouled.markers.WindowPairer` (the same one the daemon checks each marker with); this
module dedups stored markers, orders them, names the problems, and lets epoch and phase windows inherit their run's
`gpus` and `arch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from jouled.fastinit import fast_init
from jouled.markers import PairProblem, PairProblemKind, WindowPairer, window_key
from jouled.model import Marker


@fast_init  # built by the ten thousand per query (jouled.fastinit)
@dataclass(frozen=True, slots=True)
class Window:
    """One marker pair: the span of a run, an epoch or a phase."""

    run: str
    scope: str
    epoch: int | None
    phase: str | None
    arch: str | None
    gpus: tuple[str, ...]
    start_ns: int
    end_ns: int
    host: str = ""


@dataclass(frozen=True, slots=True)
class MarkerProblem:
    """A marker that could not be paired; reported, never raised (kinds: `jouled.markers.PairProblem`)."""

    kind: PairProblemKind
    marker: Marker
    message: str

    def __str__(self) -> str:  # what the CLI prints after "warning: " (the dataclass repr is the whole marker)
        return self.message


def _problem(p: PairProblem[Marker]) -> MarkerProblem:
    mk, other = p.marker, p.other
    if p.kind == "start_while_open":
        why = f"started again while seq {other.seq if other else '?'} was open — that start has no end"
    elif p.kind == "end_without_start":
        why = "no open start"
    elif p.kind == "end_before_start":
        why = f"ends before its start (seq {other.seq if other else '?'})"
    elif p.kind == "start_without_end":
        why = "no end"
    else:
        why = f"event {mk.event!r} is not start/end"
    return MarkerProblem(p.kind, mk, f"{_describe(mk)}: {why}")





def windows_from_markers(markers: Sequence[Marker]) -> tuple[list[Window], list[MarkerProblem]]:
    """Pair start/end markers per (run, scope, epoch, phase) in seq order.

    Duplicates of one (run, seq) (an MQTT QoS 1 redelivery) count once. A second start
    before an end abandons the first (reported `start_without_end`). Epoch and phase
    windows without `gpus`/`arch` inherit them from their run's start marker.
    """
    # C-level keys (attrgetter) instead of a lambda per marker: a day of epochs is tens of thousands of markers
    ordered: list[Marker] = []
    last: tuple[str, str, int] | None = None
    for mk in sorted(markers, key=_ORDER):
        seq_key = _SEQ_KEY(mk)
        if seq_key == last:  # sorted: duplicates of one (host, run, seq) are neighbours
            continue
        last = seq_key
        ordered.append(mk)

    pairer: WindowPairer[Marker] = WindowPairer()
    push = pairer.push
    pairs: list[tuple[Marker, Marker]] = []
    problems: list[MarkerProblem] = []
    for mk in ordered:
        got = push((mk.host, *window_key(mk)), mk)
        if got is None:
            continue
        if isinstance(got, PairProblem):
            problems.append(_problem(got))
        else:
            pairs.append(got)
    problems.extend(_problem(p) for p in pairer.finish())

    run_info: dict[tuple[str, str], tuple[tuple[str, ...], str | None]] = {}
    for start, end in pairs:
        if start.scope == "run":
            run_info[(start.host, start.run)] = (start.gpus or end.gpus, start.arch or end.arch)
    for mk in ordered:  # a run start without an end still names the run's gpus
        if mk.scope == "run" and mk.event == "start":
            run_info.setdefault((mk.host, mk.run), (mk.gpus, mk.arch))

    windows = []
    no_info: tuple[tuple[str, ...], str | None] = ((), None)
    for start, end in pairs:
        inherited_gpus, inherited_arch = run_info.get((start.host, start.run), no_info)
        # positional: the fields in their declared order (run, scope, epoch, phase, arch, gpus, start, end, host)
        windows.append(Window(
            start.run, start.scope, start.epoch, start.phase, start.arch or end.arch or inherited_arch,
            tuple(start.gpus or end.gpus or inherited_gpus), start.time_ns, end.time_ns, start.host,
        ))
    windows.sort(key=_window_order)
    return windows, problems


_SCOPE_ORDER = {"run": 0, "epoch": 1, "phase": 2}
_ORDER = attrgetter("host", "run", "seq", "time_ns")
_SEQ_KEY = attrgetter("host", "run", "seq")


def _window_order(w: Window) -> tuple[str, str, int, int, int]:
    return (w.host, w.run, w.start_ns, _SCOPE_ORDER.get(w.scope, 9), w.end_ns)


def _describe(mk: Marker) -> str:
    parts = [f"run {mk.run}"]
    if mk.epoch is not None:
        parts.append(f"epoch {mk.epoch}")
    if mk.phase:
        parts.append(f"phase {mk.phase}")
    if mk.scope not in ("run", "epoch", "phase") or (mk.scope != "run" and len(parts) == 1):
        parts.append(mk.scope)  # "run r start", "run r epoch 2 end"; a scope without epoch or phase says itself
    return " ".join(parts) + f" {mk.event} (seq {mk.seq})"

