"""VisaSource against pyvisa-sim meters (WT310, LMG450, generic SCPI) and a loopback TCP meter via pyvisa-py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jouled.config import VisaConfig, load_config
from jouled.errors import SourceUnavailable
from jouled.sources.visa import (
    SHIPPED_SIM,
    SIM_DEAD,
    SIM_FILE,
    SIM_LMG450,
    SIM_SCPI,
    SIM_WT310,
    MeterError,
    VisaSource,
    build_profile,
    parse_values,
    resolve_backend,
    sim_backend,
    wt_rate,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sources() -> Iterator[list[VisaSource]]:
    opened: list[VisaSource] = []
    yield opened
    for s in opened:
        s.close()


def sim(model: str, resource: str, **kw: object) -> VisaConfig:
    return VisaConfig(resource=resource, model=model, backend=sim_backend(), timeout_ms=300, **kw)  # type: ignore[arg-type]


def esr(src: VisaSource) -> str:
    """The simulated meter's event status: bit 5 (32) is set by any command it does not know."""
    return str(src._inst.query("*ESR?")).strip()


def test_sim_file_ships_inside_the_package() -> None:
    assert SIM_FILE.is_file() and SIM_FILE.parent.name == "sim"


def test_wt_profile_commands_and_rate() -> None:
    p = build_profile(VisaConfig(resource="x", model="wt310", element=2, update_interval_s=0.3))
    assert ":NUMeric:NORMal:ITEM1 P,2" in p.init and ":NUMeric:NORMal:ITEM2 WH,2" in p.init
    assert ":RATE 250MS" in p.init and p.period_s == 0.25
    assert p.init.index(":INTEGrate:RESet") < p.init.index(":NUMeric:FORMat ASCii") < p.init.index(":INTEGrate:STARt")
    assert p.energy_unit_j == 3600.0 and p.close[0] == ":INTEGrate:STOP"
    assert wt_rate(7.0) == (5.0, "5S") and wt_rate(0.01) == (0.1, "100MS")


def test_parse_values_handles_no_data_markers() -> None:
    assert parse_values("1.2345E+02,2.5E-02") == [123.45, 0.025]
    assert parse_values("2.0E+02;1.0E+00\n") == [200.0, 1.0]
    assert parse_values("9.91E+37,NAN,INF,-INF,-") == [None, None, None, None, None]


def test_wt310_reads_power_and_integrated_energy(sources: list[VisaSource]) -> None:
    src = VisaSource(sim("wt310", SIM_WT310))
    sources.append(src)
    info = src.open()
    assert info.available and info.devices == ["wall"] and info.counter
    assert any("YOKOGAWA,WT310" in n for n in info.notes)
    assert esr(src) == "0"  # every command sent at open is one the meter knows
    r = src.read()[0]
    assert r.device == "wall" and r.power_w == pytest.approx(123.45) and r.energy_j == pytest.approx(90.0)
    src._inst.write(":SIM:VALues 2.5E+02,5.0E-02")
    r2 = src.read()[0]
    assert r2.power_w == pytest.approx(250.0) and r2.energy_j == pytest.approx(180.0)
    src._inst.write(":SIM:VALues 2.5E+02,1.0E-02")  # the integrator was reset under us
    r3 = src.read()[0]
    assert r3.energy_j == pytest.approx(180.0 + 36.0)  # stays monotone
    counters = src.read_counters()
    assert len(counters) == 1 and counters[0].power_w is None and counters[0].energy_j is not None
    assert esr(src) == "0"  # the per-read EESR/WAIT commands are known too


def test_wt310_without_integration_has_no_counter(sources: list[VisaSource]) -> None:
    src = VisaSource(sim("wt310", SIM_WT310, integrate=False))
    sources.append(src)
    info = src.open()
    assert not info.counter and esr(src) == "0"
    src._inst.write(":SIM:VALues 1.5E+02")
    r = src.read()[0]
    assert r.power_w == pytest.approx(150.0) and r.energy_j is None
    assert src.read_counters() == []


def test_lmg450_reads_power_and_energy(sources: list[VisaSource]) -> None:
    src = VisaSource(sim("lmg450", SIM_LMG450))
    sources.append(src)
    info = src.open()
    assert info.counter and any("LMG450" in n for n in info.notes) and esr(src) == "0"
    r = src.read()[0]
    assert r.power_w == pytest.approx(234.56) and r.energy_j == pytest.approx(0.125 * 3600)


def test_lmg450_power_only(sources: list[VisaSource]) -> None:
    src = VisaSource(sim("lmg450", SIM_LMG450, integrate=False))
    sources.append(src)
    src.open()
    src._inst.write(":SIM:POWer 321.5")
    r = src.read()[0]
    assert r.power_w == pytest.approx(321.5) and r.energy_j is None and esr(src) == "0"


def test_generic_scpi_profile(sources: list[VisaSource]) -> None:
    cfg = sim(
        "scpi",
        SIM_SCPI,
        init_commands=["SYST:REM", "CONF:POW"],
        power_query="MEAS:POW?",
        energy_query="MEAS:ENER?",
        energy_unit_j=3.6e6,
    )
    src = VisaSource(cfg)
    sources.append(src)
    info = src.open()
    assert info.counter and esr(src) == "0"
    r = src.read()[0]
    assert r.power_w == pytest.approx(98.7) and r.energy_j == pytest.approx(0.5 * 3.6e6)


def test_generic_scpi_needs_a_power_query() -> None:
    with pytest.raises(SourceUnavailable) as e:
        VisaSource(sim("scpi", SIM_SCPI)).open()
    assert "power_query" in str(e.value) and "\n" not in str(e.value)


def test_unconfigured_meter_is_off_with_the_fix() -> None:
    with pytest.raises(SourceUnavailable) as e:
        VisaSource(VisaConfig()).open()
    assert "no meter configured" in str(e.value) and "enabled = false" in str(e.value)


def test_bad_backend_and_bad_resource_name_the_input(tmp_path: Path) -> None:
    bad = f"{tmp_path / 'missing.yaml'}@sim"
    with pytest.raises(SourceUnavailable) as e:
        VisaSource(VisaConfig(resource=SIM_WT310, backend=bad)).open()
    assert "missing.yaml" in str(e.value)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: the connection is refused
    resource = f"TCPIP0::127.0.0.1::{port}::SOCKET"
    with pytest.raises(SourceUnavailable) as e:
        VisaSource(VisaConfig(resource=resource, backend="@py", timeout_ms=300)).open()
    msg = str(e.value)
    assert f"cannot talk to the meter at {resource}" in msg and "refused" in msg and "udev" in msg and "\n" not in msg


def test_meter_that_never_answers_fails_fast_at_open() -> None:
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable) as e:
        VisaSource(sim("wt310", SIM_DEAD)).open()
    assert time.monotonic() - t0 < 5
    assert "did not answer ':STATus:EESR?'" in str(e.value) and "model" in str(e.value)


def test_session_closed_under_the_source_is_a_clear_error(sources: list[VisaSource]) -> None:
    src = VisaSource(sim("wt310", SIM_WT310))
    sources.append(src)
    src.open()
    src.read()
    src._inst.close()
    with pytest.raises(MeterError, match="closed under the source"):
        src.read()


class LoopbackWt310:
    """A WT310 on a real TCP socket (pyvisa-py SOCKET resource) that can stop answering."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.mute = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(0.2)
            buf = b""
            with conn:
                while not self.stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        reply = self._answer(line.decode().strip())
                        if reply is not None and not self.mute.is_set():
                            conn.sendall(reply.encode() + b"\n")

    @staticmethod
    def _answer(cmd: str) -> str | None:
        if not cmd.endswith("?"):
            return None
        return {
            "*IDN?": "YOKOGAWA,WT310,LOOP0001,F1.03",
            ":STATus:EESR?": "1",
            ":NUMeric:NORMal:VALue?": "1.1000E+02,1.0000E-03",
        }.get(cmd, "0")

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=2)


def test_meter_that_stops_answering_mid_run_raises_instead_of_hanging() -> None:
    meter = LoopbackWt310()
    resource = f"TCPIP0::127.0.0.1::{meter.port}::SOCKET"
    src = VisaSource(VisaConfig(resource=resource, model="wt310", backend="@py", timeout_ms=200))
    try:
        src.open()
        assert src.read()[0].power_w == pytest.approx(110.0)
        meter.mute.set()
        t0 = time.monotonic()
        with pytest.raises(MeterError) as e:
            src.read()
        elapsed = time.monotonic() - t0
        assert elapsed < src.timeout_ms / 1000 * 3 + 1  # bounded by the VISA timeout, not a hang
        msg = str(e.value)
        assert resource in msg and "did not answer" in msg and "retrying" in msg
        meter.mute.clear()
        assert src.read()[0].power_w == pytest.approx(110.0)  # the sampler's retry succeeds
    finally:
        src.close()
        meter.close()


def test_example_sim_config_runs_the_simulated_wt310(sources: list[VisaSource]) -> None:
    cfg = load_config(REPO / "systemd" / "jouled-wt310-sim.toml", environ={})
    # the alias names the shipped meters file wherever jouled is installed (a relative path differs in a wheel)
    assert cfg.sources.visa.backend == SHIPPED_SIM and resolve_backend(SHIPPED_SIM) == sim_backend()
    src = VisaSource(cfg.sources.visa)
    sources.append(src)
    assert src.open().available
    assert src.read()[0].power_w == pytest.approx(123.45)


def test_missing_interface_module_is_named() -> None:
    import importlib.util

    from jouled.sources.visa import missing_interface_module

    assert missing_interface_module("TCPIP0::10.0.0.2::inst0::INSTR", "@py") == ""
    assert missing_interface_module(SIM_WT310, sim_backend()) == ""  # pyvisa-sim needs nothing
    expected = "" if importlib.util.find_spec("usb") else "pyusb (and the libusb-1.0 system library)"
    assert missing_interface_module("USB0::0x0B21::0x0025::X::INSTR", "@py") == expected
    if expected:
        with pytest.raises(SourceUnavailable, match="pyvisa-py needs pyusb"):
            VisaSource(VisaConfig(resource="USB0::0x0B21::0x0025::X::INSTR")).open()
