"""Wall power meters over VISA (pyvisa): Yokogawa WT300 family, ZES LMG450/LMG500, and a generic SCPI profile."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jouled.clock import CLOCK
from jouled.config import VisaConfig
from jouled.errors import SourceUnavailable
from jouled.model import Reading, SourceKind
from jouled.series import SeriesMeta

from .base import SourceInfo
from .common import MonotoneCounter

# pyvisa-sim device file with a simulated WT310, LMG450 and generic SCPI meter (package data).
SIM_FILE = Path(__file__).resolve().parent / "sim" / "meters.yaml"
SIM_WT310 = "USB0::0x0B21::0x0025::SIMWT310::INSTR"
SIM_LMG450 = "GPIB0::13::INSTR"
SIM_SCPI = "TCPIP0::192.0.2.10::inst0::INSTR"
SIM_DEAD = "USB0::0x0B21::0x0025::SIMDEAD::INSTR"
WH_TO_J = 3600.0
# WT300 ":RATE" settings (data update interval): the meter accepts only these.
WT_RATES: tuple[tuple[float, str], ...] = (
    (0.1, "100MS"),
    (0.25, "250MS"),
    (0.5, "500MS"),
    (1.0, "1S"),
    (2.0, "2S"),
    (5.0, "5S"),
)
NOT_A_VALUE = 9.9e37  # Yokogawa and ZES report "no data" / overrange as 9.91E+37
OPEN_RETRY_S = 5.0  # a configured meter that cannot be opened (off, unplugged, booting) is tried again this often


class MeterError(RuntimeError):
    """The meter did not answer, or answered something that is not a reading (the sampler retries)."""


@dataclass(frozen=True)
class Profile:
    """What to send to one meter model: pure data, built from the config by ``build_profile``."""

    model: str
    init: tuple[str, ...]
    query: str  # one query whose answer holds power (and energy when ``energy_index`` is set)
    power_index: int = 0
    energy_index: int | None = None
    energy_query: str = ""  # a second query for energy (generic SCPI)
    energy_unit_j: float = 1.0
    before_read: tuple[tuple[str, str], ...] = ()  # ("query"|"write", command) before each read
    close: tuple[str, ...] = ()
    period_s: float = 0.1
    timeout_floor_ms: int = 0  # a read may wait one update interval on the meter
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_energy(self) -> bool:
        return self.energy_index is not None or bool(self.energy_query)


def sim_backend() -> str:
    """The pyvisa-sim backend string for the shipped meters.yaml: ``"/…/sim/meters.yaml@sim"``."""
    return f"{SIM_FILE}@sim"


SHIPPED_SIM = "@jouled-sim"  # backend alias: pyvisa-sim with the meters jouled ships (wherever it is installed)


def resolve_backend(backend: str) -> str:
    """``@jouled-sim`` → the shipped meters file under pyvisa-sim; any other backend as given."""
    return sim_backend() if backend.strip() == SHIPPED_SIM else backend


def wt_rate(update_interval_s: float) -> tuple[float, str]:
    """The WT300 update interval nearest to the one asked for."""
    return min(WT_RATES, key=lambda r: abs(math.log(r[0] / update_interval_s)))


def build_profile(cfg: VisaConfig) -> Profile:
    """The command set for ``cfg.model``; raises SourceUnavailable when the config cannot work."""
    el = cfg.element
    extra = tuple(cfg.init_commands)
    if cfg.model in ("wt310", "wt330"):
        period_s, rate = wt_rate(cfg.update_interval_s)
        items = [f":NUMeric:NORMal:ITEM1 P,{el}"]
        if cfg.integrate:
            items.append(f":NUMeric:NORMal:ITEM2 WH,{el}")  # WH = the WP (watt-hour) display item
        stop = (":INTEGrate:STOP", ":INTEGrate:RESet") if cfg.integrate else ()
        start = (":INTEGrate:MODE NORMal", ":INTEGrate:TIMer 0,0,0", ":INTEGrate:STARt") if cfg.integrate else ()
        notes = [f"update interval {rate} (asked {cfg.update_interval_s:g} s)"]
        if cfg.integrate:
            notes.append("energy from the meter's integrator (WH, reset and started at open, stopped at close)")
        return Profile(
            model=cfg.model,
            init=(
                "*CLS",
                ":COMMunicate:REMote ON",
                ":COMMunicate:HEADer OFF",
                ":COMMunicate:VERBose OFF",
                *stop,  # settings cannot change while integration runs
                ":NUMeric:FORMat ASCii",
                f":NUMeric:NORMal:NUMber {len(items)}",
                *items,
                f":RATE {rate}",
                ":STATus:FILTer1 FALL",  # EESR bit 1 (UPD) fires when an update completes
                *start,
                *extra,
            ),
            query=":NUMeric:NORMal:VALue?",
            power_index=0,
            energy_index=1 if cfg.integrate else None,
            energy_unit_j=WH_TO_J,
            # read the EESR to clear it, then make the meter wait for the next completed update:
            # every answer is a fresh value and reads run at the meter's own rate.
            before_read=(("query", ":STATus:EESR?"), ("write", ":COMMunicate:WAIT 1")),
            close=((":INTEGrate:STOP",) if cfg.integrate else ()) + (":COMMunicate:REMote OFF",),
            period_s=period_s,
            timeout_floor_ms=int(2000 * period_s) + 500,
            notes=tuple(notes),
        )
    if cfg.model in ("lmg450", "lmg500"):
        unit = cfg.energy_unit_j if cfg.was_set("energy_unit_j") else WH_TO_J
        query = f"ACTN;P{el}?" + (f";EP{el}?" if cfg.integrate else "")
        notes = [f"ZES short language, poll mode: {query} once per cycle (CYCL {cfg.update_interval_s:g})"]
        if cfg.integrate:
            notes.append(
                f"energy from EP{el}? in units of {unit:g} J (Wh by default): the meter's energy "
                "integration must be running — start it on the meter or with [sources.visa] init_commands"
            )
        return Profile(
            model=cfg.model,
            init=(":SYSTem:LANGuage SHORT", "FRMT ASCII", f"CYCL {cfg.update_interval_s:g}", *extra),
            query=query,  # ACTN; makes the answer wait for a new measuring cycle
            power_index=0,
            energy_index=1 if cfg.integrate else None,
            energy_unit_j=unit,
            close=("GTL",),
            period_s=cfg.update_interval_s,
            timeout_floor_ms=int(2000 * cfg.update_interval_s) + 500,
            notes=tuple(notes),
        )
    # generic SCPI
    if not cfg.power_query:
        raise SourceUnavailable(
            '[sources.visa] model = "scpi" needs power_query (the query answering watts, e.g. "MEAS:POW?") — set it'
        )
    return Profile(
        model="scpi",
        init=extra,
        query=cfg.power_query,
        energy_query=cfg.energy_query,
        energy_unit_j=cfg.energy_unit_j,
        period_s=cfg.update_interval_s,
        notes=(f"generic SCPI: power {cfg.power_query!r}" + (f", energy {cfg.energy_query!r}" if cfg.energy_query else ""),),
    )


def missing_interface_module(resource: str, backend: str) -> str:
    """The pyvisa-py helper module a resource needs and lacks ('' when none): pyusb, pyserial, linux-gpib."""
    if backend.strip() not in ("@py", "@py-py", ""):
        return ""
    needs = {"USB": ("usb", "pyusb (and the libusb-1.0 system library)"), "ASRL": ("serial", "pyserial")}
    needs["GPIB"] = ("gpib", "linux-gpib's Python bindings (or gpib-ctypes)")
    for prefix, (module, package) in needs.items():
        if resource.upper().startswith(prefix):
            import importlib.util

            if importlib.util.find_spec(module) is None:
                return package
    return ""


def parse_values(answer: str) -> list[float | None]:
    """'1.2345E+02,6.7E-01' or '1.2E+02;3.4E+00' → floats; NaN, INF and the 9.91E+37 marker → None."""
    out: list[float | None] = []
    for part in answer.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            out.append(None)
            continue
        out.append(v if math.isfinite(v) and abs(v) < NOT_A_VALUE else None)
    return out


class VisaSource:
    """Device ``wall``: the meter's active power and, where it integrates, a monotone energy counter.

    Poll mode: each ``read()`` asks once and blocks until the meter's next update (WT: EESR wait;
    LMG: ``ACTN;``), so readings come at the meter's update rate whatever ``rate_hz`` says. LMG
    continuous output (``CONT ON``) would stream without polling; it is not used (optional). A
    timeout or a closed session raises ``MeterError`` naming the resource and the query; the
    sampler retries. A reading is stamped at the middle of the query; its power is the meter's mean
    over the update interval that just ended.
    """

    name = "visa"
    kind: SourceKind = "measured"

    def __init__(self, cfg: VisaConfig | None = None, *, visa_module: Any = None) -> None:
        self.cfg = cfg if cfg is not None else VisaConfig()
        self._visa_injected = visa_module
        self._visa: Any = None
        self._rm: Any = None
        self._inst: Any = None
        self.profile: Profile | None = None
        self.idn = ""
        self._energy = MonotoneCounter()  # an integrator reset under us restarts at zero
        self._lock = threading.Lock()
        self.timeout_ms = self.cfg.timeout_ms

    @property
    def open_retry_s(self) -> float | None:
        """How often the sampler re-probes a meter that failed to open: soon when one is configured (it may be
        booting or unplugged for a moment), never when none is (only a config change helps)."""
        return OPEN_RETRY_S if self.cfg.resource else None

    def _load(self) -> Any:
        if self._visa_injected is not None:
            return self._visa_injected
        try:
            import pyvisa
        except ImportError:
            raise SourceUnavailable(
                "pyvisa is not installed — pip install 'jouled[visa]', or disable with [sources.visa] enabled = false"
            ) from None
        return pyvisa

    def open(self) -> SourceInfo:
        cfg = self.cfg
        if not cfg.resource:
            raise SourceUnavailable(
                'no meter configured — set [sources.visa] resource (e.g. "USB0::0x0B21::0x0025::<serial>::INSTR"; '
                "`pyvisa-shell` then `list` shows them), or disable with [sources.visa] enabled = false"
            )
        profile = build_profile(cfg)
        visa = self._visa = self._load()
        missing = missing_interface_module(cfg.resource, cfg.backend)
        if missing:
            raise SourceUnavailable(
                f"pyvisa-py needs {missing} to reach {cfg.resource} — pip install it into jouled's environment"
            )
        try:
            self._rm = visa.ResourceManager(resolve_backend(cfg.backend))
        except Exception as e:  # pyvisa raises ValueError, OSError or LibraryError by backend
            raise SourceUnavailable(
                f"VISA backend {cfg.backend!r} failed to load ({type(e).__name__}: {e}) — "
                'use "@py" (pyvisa-py), "file.yaml@sim" or "@jouled-sim" (pyvisa-sim), or install the vendor VISA library'
            ) from None
        self.timeout_ms = max(cfg.timeout_ms, profile.timeout_floor_ms)
        try:
            self._inst = self._rm.open_resource(
                cfg.resource,
                timeout=self.timeout_ms,
                read_termination=cfg.read_termination,
                write_termination=cfg.write_termination,
            )
        except Exception as e:
            self._close_rm()
            raise SourceUnavailable(
                f"cannot open {cfg.resource} with backend {cfg.backend!r} ({type(e).__name__}: {e}) — check the address "
                "and cable (`pyvisa-shell`, `list`); a USB meter needs read/write on its /dev/bus/usb node "
                "(the udev rule in the README)"
            ) from None
        try:
            self.idn = str(self._inst.query("*IDN?")).strip()
            for cmd in profile.init:
                self._inst.write(cmd)
            self.profile = profile
            first = self._read_locked()
        except MeterError as e:
            self.close()
            raise SourceUnavailable(
                f"meter at {cfg.resource} does not answer as a {cfg.model} ({e}) — check [sources.visa] model, "
                "element and read_termination against the meter's interface settings"
            ) from None
        except Exception as e:
            self.close()
            raise SourceUnavailable(
                f"cannot talk to the meter at {cfg.resource} (*IDN? failed: {type(e).__name__}: {e}) — check that it "
                "is on, the address and cable, remote mode, and that read_termination/write_termination match its "
                "interface; a USB meter needs the udev rule in the README"
            ) from None
        notes = [f"meter: {self.idn}", *profile.notes]
        if first.power_w is None:
            notes.append("first reading had no power value (meter shows no data or overrange)")
        return SourceInfo(
            name=self.name,
            kind=self.kind,
            available=True,
            devices=["wall"],
            period_s=profile.period_s,
            notes=notes,
            counter=profile.has_energy,
            # reads block until the meter's next update: both fields come at its update interval
            series={"wall": SeriesMeta(role="wall", device="wall", power_period_s=profile.period_s,
                                       counter_period_s=profile.period_s if profile.has_energy else None)},
        )

    def read(self) -> list[Reading]:
        with self._lock:  # one VISA session: never two queries in flight
            return [self._read_locked()]

    def read_counters(self) -> list[Reading]:
        if self.profile is None or not self.profile.has_energy:
            return []
        with self._lock:
            r = self._read_locked()
        return [Reading(r.time_ns, r.device, None, r.energy_j, {})] if r.energy_j is not None else []

    def _ask(self, kind: str, command: str) -> str:
        inst, visa = self._inst, self._visa
        if inst is None:
            raise MeterError(f"visa: {self.cfg.resource} is closed — the source was not opened or was closed")
        try:
            if kind == "write":
                inst.write(command)
                return ""
            return str(inst.query(command))
        except visa.errors.VisaIOError as e:
            if e.error_code == visa.constants.StatusCode.error_timeout:
                self._clear()
                raise MeterError(
                    f"visa: meter {self.cfg.resource} did not answer {command!r} within {self.timeout_ms} ms — "
                    "check that it is on, connected and in remote mode; retrying"
                ) from None
            raise MeterError(f"visa: meter {self.cfg.resource} failed on {command!r}: {e.description}") from None
        except visa.errors.InvalidSession:
            raise MeterError(
                f"visa: the session to {self.cfg.resource} was closed under the source (cable pulled or meter "
                "reset?) — restart the source to reconnect"
            ) from None

    def _clear(self) -> None:
        """After a timeout a late answer would pair with the next query: clear the device's buffers."""
        if self._raw_socket():
            self._drain()
            return
        try:
            self._inst.clear()
        except Exception:  # not every interface supports a device clear; the next read then resyncs
            pass

    def _raw_socket(self) -> bool:
        """A raw TCP socket through pyvisa-py, whose clear() spins forever once the meter closed the connection
        (select says readable, recv returns nothing): such a session is drained with short reads instead."""
        return self.cfg.resource.upper().endswith("::SOCKET") and self.cfg.backend.strip() in ("@py", "@py-py", "")

    def _drain(self, attempts: int = 3, timeout_ms: int = 50) -> None:
        """Read and drop whatever late answer is buffered, each read bounded by ``timeout_ms``."""
        inst = self._inst
        old = inst.timeout
        try:
            inst.timeout = timeout_ms
            for _ in range(attempts):
                inst.read_raw()
        except Exception:  # the expected end: a timeout once nothing is left (or the connection is gone)
            pass
        finally:
            try:
                inst.timeout = old
            except Exception:
                pass

    def _read_locked(self) -> Reading:
        p = self.profile
        assert p is not None
        for kind, command in p.before_read:
            self._ask(kind, command)
        t0 = time.monotonic_ns()
        answer = self._ask("query", p.query)
        values = parse_values(answer)
        if len(values) <= max(p.power_index, p.energy_index or 0):
            raise MeterError(f"visa: meter {self.cfg.resource} answered {p.query!r} with {answer.strip()!r}: too few values")
        energy_raw = values[p.energy_index] if p.energy_index is not None else None
        if p.energy_query:
            e = parse_values(self._ask("query", p.energy_query))
            energy_raw = e[0] if e else None
        t1 = time.monotonic_ns()
        energy_j = None
        if energy_raw is not None:
            energy_j = self._energy.update(energy_raw * p.energy_unit_j)
        return Reading(CLOCK.from_monotonic_ns((t0 + t1) // 2), "wall", values[p.power_index], energy_j, {})

    def _close_rm(self) -> None:
        if self._rm is not None:
            try:
                self._rm.close()
            except Exception:
                pass
        self._rm = None

    def close(self) -> None:
        inst, self._inst = self._inst, None
        if inst is not None:
            if self.profile is not None:
                for cmd in self.profile.close:
                    try:
                        inst.write(cmd)
                    except Exception:  # the meter may be gone: closing must still finish
                        break
            try:
                inst.close()
            except Exception:
                pass
        self._close_rm()
