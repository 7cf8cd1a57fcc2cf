"""Benchmark the daemon as an observer: its CPU and memory as a process, and what it costs the training it measures.

0. The machine's wake-up cost: CPU per wake of an empty 100 Hz loop (the sampling thread's `Wake`, a
   `threading.Event`, a plain sleep), and one RAPL read (4 domains)
   hot vs after a 10 ms sleep. On a VM this is what a tick costs before any work, and why the daemon's figures
   depend on its number of wake-ups more than on its reads.
1. Observer cost: jouled's own daemon as its own process (`python -m tests.faults.shim_daemon`: build_daemon,
   sampler threads, asyncio loop, SQLite log; the GPUs are 8 NVML shims, RAPL 4 domains of a powercap tree in a temp
   dir — the only fakes; markers on, with the embedded MQTT broker, as `jouled run` has them) at 10 Hz and 100 Hz.
   CPU = the sum over the process's threads of their scheduler run time (/proc/<pid>/task/*/schedstat, ns) over a
   steady interval after a warm-up, divided by the wall time of that interval (% of one core); wake-ups/s from the
   threads' voluntary context switches; RSS (and USS, its private part) at the end. Goals: <= 0.5 % at 10 Hz,
   <= 2 % at 100 Hz, RSS <= 50 MB. With `--before PATH` (a git worktree of older code) the same is measured for
   that code in the same run, alternating, so the machine's state hits both alike.
   CodeCarbon's `OfflineEmissionsTracker` (with the codecarbon extra) is measured the same way at
   measure_power_secs 1 and 15 (its default): steady-state CPU, and CPU over the whole run including its start-up.
   `--service`: the same daemon as the installed service runs it — forwarding to a real InfluxDB 1.x (Debian
   `influxdb`, started here on the same 2 cores) and serving `/metrics`, scraped every 15 s as Prometheus's example
   configuration does — at 10 and 100 Hz (and the --before code the same way); InfluxDB's count of power points
   proves the forwarding ran.
2. Training throughput: the NB201 cell of bench/train_throughput.py trained with torch on every core, with no
   observer and with each observer (jouled at 10 and 100 Hz, CodeCarbon at 1 s and 15 s), in rounds of blocks
   (off, then each observer) so drift of the machine hits all alike; the figure per observer is
   median(on) / median(off). Goal for jouled at 100 Hz >= 0.99.

Every figure comes from this one run on this machine; the load average is recorded (other work on the machine
inflates CPU figures and spreads the throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.brokers import free_port  # noqa: E402
from tests.sources.powercap import powercap_tree  # noqa: E402

RESULTS = REPO / "bench" / "results" / "observer.json"


def start_daemon(tmp: Path, rate_hz: float, gpus: int, rapl: int, code: Path = REPO,
                 extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """The shim daemon from `code` (this tree, or an older worktree given by --before); `extra`: more arguments.
    Its log goes to tmp/daemon.log."""
    root = powercap_tree(tmp / f"powercap-{rate_hz:g}", rapl)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp / "run"), XDG_DATA_HOME=str(tmp / "data"), PYTHONPATH=str(code))
    for k in ("JOULED_CONFIG", "JOULED_STORE", "RUNTIME_DIRECTORY"):
        env.pop(k, None)
    argv = [sys.executable, "-m", "tests.faults.shim_daemon", "--store", str(tmp / f"obs-{rate_hz:g}.db"),
            "--devices", str(gpus), "--rate", str(rate_hz), "--rapl-root", str(root), "--port", str(free_port()), *extra]
    with open(tmp / "daemon.log", "wb") as log:
        return subprocess.Popen(argv, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=log)


CODECARBON_CHILD = """
import sys, time, logging
from codecarbon import OfflineEmissionsTracker
t = OfflineEmissionsTracker(country_iso_code="DEU", measure_power_secs=float(sys.argv[1]), save_to_file=False,
                            log_level="error", tracking_mode="machine")
t.start()
print("started", flush=True)
time.sleep(1e6)
"""


def start_codecarbon(interval_s: float) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", CODECARBON_CHILD, str(interval_s)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    p.stdout.readline()  # "started": its start-up is over
    return p


def stop(p: subprocess.Popen[bytes]) -> None:
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)


def _threads(pid: int) -> dict[int, tuple[int, int, str]]:
    """Per thread: (run time ns, voluntary context switches, OS name: jouled names its sampling and store threads)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            run_ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            vol = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
                       if line.startswith("voluntary_ctxt_switches"))
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except (OSError, StopIteration):  # the thread ended between the listing and the read
            continue
        out[int(tid)] = (run_ns, vol, "main" if int(tid) == pid else comm)
    return out


def steady_cost(p: subprocess.Popen[bytes], seconds: float, warmup_s: float) -> dict[str, Any]:
    """CPU % of one core (all threads' run time), wake-ups/s, RSS/USS of a running observer process."""
    proc = psutil.Process(p.pid)
    time.sleep(warmup_s)  # imports, sources opening, the first flushes
    a, c0, t0 = _threads(p.pid), proc.cpu_times(), time.perf_counter()
    time.sleep(seconds)
    b, c1, t1 = _threads(p.pid), proc.cpu_times(), time.perf_counter()
    mem = proc.memory_full_info()
    # the process's user+system time counts threads that ended in the interval too (CodeCarbon starts a
    # threading.Timer thread per measurement); the threads' schedstat is ns-exact but sees only live threads
    cpu_s = (c1.user + c1.system) - (c0.user + c0.system)
    run_ns = sum(b[t][0] - a.get(t, (0, 0, ""))[0] for t in b)
    wakes = sum(b[t][1] - a.get(t, (0, 0, ""))[1] for t in b)
    per_thread: dict[str, dict[str, float]] = {}  # by OS name (threads of one name summed)
    for t, (ns, vol, comm) in b.items():
        d = per_thread.setdefault(comm, {"cpu_pct": 0.0, "wakeups_per_s": 0.0})
        d["cpu_pct"] += 100 * (ns - a.get(t, (0, 0, ""))[0]) / 1e9 / (t1 - t0)
        d["wakeups_per_s"] += (vol - a.get(t, (0, 0, ""))[1]) / (t1 - t0)
    for d in per_thread.values():
        d["cpu_us_per_wakeup"] = round(d["cpu_pct"] * 1e4 / d["wakeups_per_s"], 1) if d["wakeups_per_s"] else 0.0
        d["cpu_pct"], d["wakeups_per_s"] = round(d["cpu_pct"], 3), round(d["wakeups_per_s"], 1)
    return {"seconds": seconds, "cpu_pct_of_one_core": round(100 * cpu_s / (t1 - t0), 3),
            "cpu_pct_live_threads_schedstat": round(100 * run_ns / 1e9 / (t1 - t0), 3),
            "wakeups_per_s_live_threads": round(wakes / (t1 - t0), 1), "rss_mb": round(mem.rss / 1e6, 1),
            "uss_mb": round(mem.uss / 1e6, 1), "threads": len(b), "by_thread": per_thread}


def observer_cost(rate_hz: float, seconds: float, warmup_s: float, gpus: int, rapl: int,
                  code: Path = REPO) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        p = start_daemon(Path(d), rate_hz, gpus, rapl, code)
        try:
            r = steady_cost(p, seconds, warmup_s)
        finally:
            stop(p)
    return {"rate_hz": rate_hz, "devices": gpus + rapl, **r}


SCRAPE_S = 15.0  # Prometheus's scrape interval in its example configuration (its built-in default is 1 min)


def service_cost(rate_hz: float, seconds: float, warmup_s: float, gpus: int, rapl: int,
                 code: Path = REPO) -> dict[str, Any]:
    """The daemon as the installed service runs it: forwarding to a real InfluxDB 1.x on this machine and serving
    /metrics, scraped every SCRAPE_S by this script as Prometheus would. InfluxDB runs on the same 2 cores."""
    import threading
    import urllib.request

    from tests.servers import start_influxd

    influx = start_influxd()
    influx.create_database("jouled")
    port = free_port()
    scrapes: list[float] = []
    stop_scrape = threading.Event()

    def scrape() -> None:
        while not stop_scrape.wait(SCRAPE_S):
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    r.read()
                scrapes.append(time.perf_counter() - t)
            except OSError:
                pass

    try:
        with tempfile.TemporaryDirectory() as d:
            p = start_daemon(Path(d), rate_hz, gpus, rapl, code, extra=(
                "--influx-url", influx.url, "--prometheus-listen", f"127.0.0.1:{port}"))
            scraper = threading.Thread(target=scrape, daemon=True)
            scraper.start()
            try:
                r = steady_cost(p, seconds, warmup_s)
                if p.poll() is not None:
                    raise RuntimeError(f"the daemon exited: {(Path(d) / 'daemon.log').read_text()[-2000:]}")
            finally:
                stop_scrape.set()
                stop(p)
            scraper.join(5)
        # the forwarding was real: what InfluxDB holds
        got = influx.influxql('SELECT count(power_w) FROM "power"', db="jouled")
        points = int(got[0]["values"][0][1]) if got else 0
        if not points or not scrapes:
            raise RuntimeError(f"forwarding or /metrics did not work ({points} points, {len(scrapes)} scrapes)")
    finally:
        influx.close()
    return {"rate_hz": rate_hz, "devices": gpus + rapl, "forwarding": "InfluxDB 1.x (v1 API), same machine",
            "metrics_scrape_s": SCRAPE_S, "scrapes": len(scrapes), "power_points_in_influxdb": points, **r}


def codecarbon_cost(interval_s: float, seconds: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", CODECARBON_CHILD, str(interval_s)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert p.stdout is not None
        p.stdout.readline()
        startup_s = time.perf_counter() - t0
        start_cpu = psutil.Process(p.pid).cpu_times()
        r = steady_cost(p, seconds, max(2.0, interval_s))
        total = psutil.Process(p.pid).cpu_times()
        whole_s = time.perf_counter() - t0
    finally:
        stop(p)
    startup_cpu_s = start_cpu.user + start_cpu.system
    return {"tracker": "codecarbon OfflineEmissionsTracker", "measure_power_secs": interval_s,
            "startup_s": round(startup_s, 2), "startup_cpu_s": round(startup_cpu_s, 2),
            "cpu_pct_whole_run_incl_startup": round(100 * (total.user + total.system) / whole_s, 3), **r}


def wake_cost() -> dict[str, Any]:
    """CPU per wake-up of an empty 100 Hz loop (three ways to wait), and a RAPL read hot vs after a 10 ms sleep
    (this machine's cold caches)."""
    import threading

    from jouled.config import RaplConfig
    from jouled.sampler import Wake
    from jouled.sources.rapl import RaplSource

    res: dict[str, float] = {}

    def empty(label: str, wait: Callable[[float], object]) -> None:
        c0, n, nxt = time.thread_time(), 0, time.monotonic()
        end = nxt + 3.0
        while nxt < end:
            nxt += 0.01
            d = nxt - time.monotonic()
            if d > 0:
                wait(d)
            n += 1
        res[label] = (time.thread_time() - c0) / n * 1e6

    # the sampling thread's wait (jouled.sampler.Wake, a bare lock), a threading.Event's, and a plain sleep's (the
    # floor: no way to cut it short)
    for label, wait in (("empty_wake_us", Wake().wait), ("empty_wake_event_us", threading.Event().wait),
                        ("empty_wake_sleep_us", time.sleep)):
        th = threading.Thread(target=empty, args=(label, wait))
        th.start()
        th.join()
    with tempfile.TemporaryDirectory() as d:
        src = RaplSource(RaplConfig(root=str(powercap_tree(Path(d) / "pc", 4))))
        src.open()
        for label, pause_s in (("rapl_read_hot_us", 0.0), ("rapl_read_after_10ms_sleep_us", 0.01)):
            n, spent, end = 0, 0.0, time.monotonic() + 3.0
            while time.monotonic() < end:
                if pause_s:
                    time.sleep(pause_s)
                c = time.thread_time()
                src.read()
                spent += time.thread_time() - c
                n += 1
            res[label] = spent / n * 1e6
        src.close()
    return {k: round(v, 1) for k, v in res.items()}


def tick_cost(gpus: int, rapl: int, ticks: int = 200) -> dict[str, Any]:
    """CPU of one sampling tick's parts, in this process, hot (back to back) and after a 10 ms / 100 ms sleep (what a
    100 Hz / 10 Hz tick meets): the NVML shim's own calls alone (one nvmlDeviceGetFieldValues per GPU: what stands
    in for pynvml's wrapper and the driver), jouled's NvmlSource.read over them, RaplSource.read, and the column
    sink taking both. Medians over `ticks`; `floor_cpu_pct` is the shim's calls alone at each rate: the part of the
    daemon's figure no change to jouled can remove."""
    from jouled.columns import ColumnSink
    from jouled.config import NvmlConfig, RaplConfig
    from jouled.sources.nvml import NvmlSource
    from jouled.sources.rapl import RaplSource
    from tests.sources.nvml_shim import make_shim

    shim = make_shim(gpus)
    nv = NvmlSource(NvmlConfig(), nvml_module=shim)
    nv.open()
    handles, fields = [shim.nvmlDeviceGetHandleByIndex(i) for i in range(gpus)], [shim.NVML_FI_DEV_POWER_INSTANT]
    sink = ColumnSink()
    out: dict[str, Any] = {"gpus": gpus, "rapl_domains": rapl}
    with tempfile.TemporaryDirectory() as d:
        ra = RaplSource(RaplConfig(root=str(powercap_tree(Path(d) / "pc", rapl))))
        ra.open()

        def shim_calls() -> None:
            for h in handles:
                shim.nvmlDeviceGetFieldValues(h, fields)

        for label, pause_s in (("hot", 0.0), ("after_10ms", 0.01), ("after_100ms", 0.1)):
            parts: dict[str, list[int]] = {"nvml_shim_calls_us": [], "nvml_read_us": [], "rapl_read_us": [],
                                           "sink_add_us": []}
            for k in range(ticks if pause_s < 0.05 else ticks // 4):
                # one part per tick, in turn: each meets the machine as cold as a tick does
                part = list(parts)[k % len(parts)]
                if pause_s:
                    time.sleep(pause_s)
                if part == "sink_add_us":
                    r1, r2 = nv.read(), ra.read()
                    if pause_s:
                        time.sleep(pause_s)
                    c = time.thread_time_ns()
                    sink.add("nvml", r1)
                    sink.add("rapl", r2)
                else:
                    fn = {"nvml_shim_calls_us": shim_calls, "nvml_read_us": nv.read, "rapl_read_us": ra.read}[part]
                    c = time.thread_time_ns()
                    fn()
                parts[part].append(time.thread_time_ns() - c)
                if len(sink) > 10_000:
                    sink.drain("bench")
            out[label] = {k: round(statistics.median(v) / 1e3, 1) for k, v in parts.items()}
        ra.close()
    nv.close()
    out["floor_cpu_pct"] = {"10hz": round(out["after_100ms"]["nvml_shim_calls_us"] * 10 / 1e4, 3),
                            "100hz": round(out["after_10ms"]["nvml_shim_calls_us"] * 100 / 1e4, 3)}
    return out


def jouled_run_memory(seconds: float) -> dict[str, Any]:
    """RSS/USS of `jouled run` itself (the command line loaded too: typer, rich), on this machine's own sources."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp / "run"), XDG_DATA_HOME=str(tmp / "data"),
                   JOULED_MQTT_EMBEDDED_PORT=str(free_port()), JOULED_MQTT_URL="")
        for k in ("JOULED_CONFIG", "JOULED_STORE", "RUNTIME_DIRECTORY"):
            env.pop(k, None)
        p = subprocess.Popen([sys.executable, "-m", "jouled", "run", "--store", f"sqlite:///{tmp}/run.db"], cwd=REPO,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(seconds)
            mem = psutil.Process(p.pid).memory_full_info()
        finally:
            stop(p)
    return {"command": "jouled run (this machine's sources, embedded broker)", "after_s": seconds,
            "rss_mb": round(mem.rss / 1e6, 1), "uss_mb": round(mem.uss / 1e6, 1)}


Observer = tuple[str, Callable[[Path], subprocess.Popen[bytes]]]


def observers(gpus: int, rapl: int, codecarbon: bool, before: Path | None = None) -> list[Observer]:
    out: list[Observer] = [
        ("jouled_10hz", lambda d: start_daemon(d / "j10", 10.0, gpus, rapl)),
        ("jouled_100hz", lambda d: start_daemon(d / "j100", 100.0, gpus, rapl)),
    ]
    if before is not None:  # the older code in the same rounds: its ratio beside this one's shows the noise
        out += [("before_10hz", lambda d: start_daemon(d / "b10", 10.0, gpus, rapl, before)),
                ("before_100hz", lambda d: start_daemon(d / "b100", 100.0, gpus, rapl, before))]
    if codecarbon:
        out += [("codecarbon_1s", lambda d: start_codecarbon(1.0)), ("codecarbon_15s", lambda d: start_codecarbon(15.0))]
    return out


def throughput(rounds: int, steps: int, arms: list[Observer]) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    import train_throughput as tt

    ns = argparse.Namespace(steps=steps, warmup=5, batch_size=64, channels=16, cells=1, image_size=32,
                            arch=tt.EXAMPLE_ARCH_STR, device="cpu", marker_every=10)
    tt.measure(ns, None)  # warm torch up before anything is timed
    got: dict[str, list[float]] = {"off": [], **{name: [] for name, _ in arms}}
    with tempfile.TemporaryDirectory() as d:
        for k in range(rounds):
            got["off"].append(tt.measure(ns, None)["samples_per_s"])
            for name, start in arms:
                p = start(Path(d) / f"r{k}")
                try:
                    time.sleep(3.0)  # the observer is up and sampling before the timed steps start
                    got[name].append(tt.measure(ns, None)["samples_per_s"])
                finally:
                    stop(p)
    off = statistics.median(got["off"])
    return {"rounds": rounds, "steps_per_block": steps, "torch_threads": torch.get_num_threads(),
            "samples_per_s": {k: [round(x, 1) for x in v] for k, v in got.items()},
            "ratio_on_off": {name: round(statistics.median(got[name]) / off, 4) for name, _ in arms}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="steady interval per rate")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--rapl", type=int, default=4)
    ap.add_argument("--before", type=Path, default=None,
                    help="a worktree of older code (with jouled/daemon etc. linked as the package maps them): measured "
                         "beside this tree, alternating")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of throughput blocks (0: skip that part)")
    ap.add_argument("--steps", type=int, default=40, help="timed SGD steps per block")
    ap.add_argument("--service", action="store_true",
                    help="also measure the daemon forwarding to a real InfluxDB with /metrics scraped (Debian influxdb)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    try:
        import codecarbon  # noqa: F401
        have_cc = True
    except ImportError:
        have_cc = False
    res: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
        "daemon": "tests.faults.shim_daemon (jouled's daemon; NVML shim GPUs, RAPL powercap tree in a temp dir)",
        "goals": {"cpu_pct_10hz": 0.5, "cpu_pct_100hz": 2.0, "rss_mb": 50, "throughput_ratio": 0.99},
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "wake_cost": wake_cost(),
        "tick_cost": tick_cost(a.gpus, a.rapl),
        "observer": [],
    }
    print(json.dumps(res["wake_cost"]), flush=True)
    print(json.dumps(res["tick_cost"]), flush=True)
    if a.before is not None:
        res["before"] = {"code": str(a.before), "observer": []}
    for rate in (10.0, 100.0):
        r = observer_cost(rate, a.seconds, a.warmup, a.gpus, a.rapl)
        print(json.dumps(r), flush=True)
        res["observer"].append(r)
        if a.before is not None:
            b = observer_cost(rate, a.seconds, a.warmup, a.gpus, a.rapl, a.before)
            print("before", json.dumps(b), flush=True)
            res["before"]["observer"].append(b)
    if a.service:
        res["service"] = []
        if a.before is not None:
            res["before"]["service"] = []
        for rate in (10.0, 100.0):
            r = service_cost(rate, a.seconds, a.warmup, a.gpus, a.rapl)
            print("service", json.dumps(r), flush=True)
            res["service"].append(r)
            if a.before is not None:  # its tests/faults/shim_daemon.py needs --influx-url and --prometheus-listen
                b = service_cost(rate, a.seconds, a.warmup, a.gpus, a.rapl, a.before)
                print("before service", json.dumps(b), flush=True)
                res["before"]["service"].append(b)
    if have_cc:
        res["codecarbon"] = [codecarbon_cost(i, a.seconds) for i in (1.0, 15.0)]
        print(json.dumps(res["codecarbon"]), flush=True)
    res["jouled_run_memory"] = jouled_run_memory(a.warmup + 5.0)
    print(json.dumps(res["jouled_run_memory"]), flush=True)
    if a.rounds:
        t = throughput(a.rounds, a.steps, observers(a.gpus, a.rapl, have_cc, a.before))
        print(json.dumps(t), flush=True)
        res["throughput"] = t
    res["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
