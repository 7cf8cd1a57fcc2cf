"""The device check on a real NVIDIA GPU: NVML's reads and update periods, the sampler, the daemon's own cost, and
real trainings with markers measured from outside the training process.

Run it where an NVIDIA driver is: `python bench/gpu_check.py --out bench/results/gpu_check.json` (about 5 minutes on an H200).
Nothing here is simulated: the NVML source talks to the driver, `jouled run` and `jouled train` are the commands a
user runs (the daemon with its embedded MQTT broker; nvidia-smi polling on beside NVML, as the comparison source).

1. `nvml`: the GPU, its driver and power limits; the time one call of each NVML read jouled makes takes; how often
   the driver updates the instant power field, the averaged power and the energy counter (the value seen to change,
   read in a tight loop) — what the sampling rates and the window-quality flags must be judged against.
2. `sampler`: the daemon's sampler on the real NVML at 10/100/1000 Hz: delivered/scheduled and jitter.
3. `observer`: `jouled run` as its own process (NVML only, markers on) at 10 and 100 Hz: CPU % of one core, RSS.
4. `training`: an NB201 cell trained on the GPU by `jouled train`, once with epochs of several seconds and once with
   epochs under a second (the energy-benchmark study's short epochs), the daemon at its default rates (power 10 Hz,
   counter 2 Hz) with nvidia-smi at 10 Hz beside it; then `jouled energy epochs` and `jouled assess` on each run:
   energy per epoch by NVML and by nvidia-smi, samples per epoch, the flags.
5. `throughput`: training steps per second on the GPU with the daemon off and on at 100 Hz, interleaved.

Each part's failure is recorded in the JSON and the next part runs; the JSON is rewritten after every part.
Where no NVML answers (this script's own check on a CPU machine) parts 1-3 and 5 say so and part 4 runs on the
machine's CPU sources.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
# appended, not prepended: where jouled is installed as a wheel (the device machine) the source tree's jouled/ folder
# lacks the component packages (jouled.daemon lives in daemon/), so it must not shadow the installed package
sys.path.append(str(REPO))
sys.path.append(str(REPO / "bench"))
# imported first, so bench/sampler.py and bench/observer.py (which put the source tree first on sys.path) find the
# installed package already loaded
import jouled  # noqa: E402, F401

RESULTS = REPO / "bench" / "results" / "gpu_check.json"
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _nvml() -> Any:
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def _timed_calls(call: Callable[[], object], n: int) -> dict[str, float]:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        call()
        ts.append(time.perf_counter_ns() - t0)
    ts.sort()
    return {"n": n, "p50_us": round(ts[n // 2] / 1e3, 2), "p99_us": round(ts[int(n * 0.99)] / 1e3, 2),
            "mean_us": round(sum(ts) / n / 1e3, 2)}


def _update_period(read: Callable[[], float], seconds: float) -> dict[str, Any]:
    """Read in a tight loop; the times at which the value changed give the driver's update period."""
    changes: list[float] = []
    last = read()
    reads = 0
    t_end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < t_end:
        v = read()
        reads += 1
        if v != last:
            changes.append(now)
            last = v
    gaps_ms = sorted(1e3 * (b - a) for a, b in itertools.pairwise(changes))
    if not gaps_ms:
        return {"reads": reads, "changes": len(changes), "seconds": seconds}
    return {"reads": reads, "changes": len(changes), "seconds": seconds,
            "interval_p10_ms": round(gaps_ms[len(gaps_ms) // 10], 2),
            "interval_p50_ms": round(gaps_ms[len(gaps_ms) // 2], 2),
            "interval_p90_ms": round(gaps_ms[int(len(gaps_ms) * 0.9)], 2),
            "interval_max_ms": round(gaps_ms[-1], 2)}


def _gpu_load(seconds: float) -> subprocess.Popen[bytes] | None:
    """A matrix-product load in a child process, so the power readings move while their update periods are read."""
    code = ("import torch,time\n"
            "a=torch.randn(8192,8192,device='cuda',dtype=torch.bfloat16)\n"
            f"t=time.time()+{seconds}\n"
            "while time.time()<t:\n  b=a@a\n  torch.cuda.synchronize()\n  time.sleep(0.003)\n")
    try:
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def part_nvml() -> dict[str, Any]:
    nv = _nvml()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    name = nv.nvmlDeviceGetName(h)
    out: dict[str, Any] = {"gpus": int(nv.nvmlDeviceGetCount()), "name": name.decode() if isinstance(name, bytes) else name}
    for key, call in (("driver", "nvmlSystemGetDriverVersion"), ("nvml_version", "nvmlSystemGetNVMLVersion")):
        try:
            out[key] = str(getattr(nv, call)())
        except Exception as e:
            out[key] = f"not answered: {e}"
    try:
        lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
        out["power_limits_w"] = [lo / 1000, hi / 1000]
        out["power_limit_w"] = nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
    except Exception as e:  # the shim, or a driver that does not answer: recorded, the rest goes on
        out.setdefault("power_limits_w", f"not answered: {e}")
    fields = [nv.NVML_FI_DEV_POWER_INSTANT]

    def instant_w() -> float:
        return float(nv.nvmlDeviceGetFieldValues(h, fields)[0].value.uiVal) / 1000

    def average_w() -> float:
        return float(nv.nvmlDeviceGetPowerUsage(h)) / 1000

    def counter_mj() -> float:
        return float(nv.nvmlDeviceGetTotalEnergyConsumption(h))

    out["idle_instant_w"] = instant_w()
    out["call_latency"] = {
        "field_values_instant_power": _timed_calls(instant_w, 2000),
        "get_power_usage": _timed_calls(average_w, 2000),
        "get_total_energy_consumption": _timed_calls(counter_mj, 500),
        "get_utilization_rates": _timed_calls(lambda: nv.nvmlDeviceGetUtilizationRates(h), 500),
    }
    load = _gpu_load(12.0)
    time.sleep(3.0)  # the load's CUDA start-up
    out["under_load"] = {
        "instant_w_now": instant_w(),
        "update_period": {
            "instant_power_field": _update_period(instant_w, 2.0),
            "get_power_usage": _update_period(average_w, 2.0),
            "total_energy_counter": _update_period(counter_mj, 2.0),
        },
    }
    if load is not None:
        load.wait(30)
    nv.nvmlShutdown()
    return out


def _field_value(fv: Any) -> float:
    """The number in an nvmlFieldValue_t, by its declared type (NVML_VALUE_TYPE_*: double, uint, ulong, ull, sll)."""
    v = fv.value
    return float((v.dVal, v.uiVal, v.ulVal, v.ullVal, v.sllVal)[int(fv.valueType)] if int(fv.valueType) < 5 else v.ullVal)


def part_fields() -> dict[str, Any]:
    """The energy counter and power through nvmlDeviceGetFieldValues: does the driver say when it took each value?

    Each nvmlFieldValue_t carries `timestamp` (µs, wall clock) and `latencyUsec`. If the counter's timestamp is the
    time of its last update, a counter read can be filed under that time instead of the time of the read (the
    `counter+marker@update` method of bench/energy_accuracy.py), which removes the up-to-one-update-period error at
    each window boundary; and if the field read is as cheap as the power field, the counter can be read every tick.
    """
    nv = _nvml()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    ids = {"total_energy_consumption_83": 83, "energy_191": getattr(nv, "NVML_FI_DEV_ENERGY", 191),
           "power_instant_186": nv.NVML_FI_DEV_POWER_INSTANT, "power_average_185": nv.NVML_FI_DEV_POWER_AVERAGE}
    out: dict[str, Any] = {}
    load = _gpu_load(14.0)
    time.sleep(3.0)
    for name, fid in ids.items():
        fv = nv.nvmlDeviceGetFieldValues(h, [fid])[0]
        r: dict[str, Any] = {"field_id": fid, "nvml_return": int(fv.nvmlReturn)}
        if fv.nvmlReturn != nv.NVML_SUCCESS:
            out[name] = r
            continue
        r["value_type"] = int(fv.valueType)
        r["call_latency"] = _timed_calls(lambda fid=fid: nv.nvmlDeviceGetFieldValues(h, [fid]), 300)
        # a tight loop for 1.5 s: (host time of the read, value, the driver's timestamp, latencyUsec)
        rows: list[tuple[float, float, int, int]] = []
        t_end = time.time() + 1.5
        while (now := time.time()) < t_end:
            f = nv.nvmlDeviceGetFieldValues(h, [fid])[0]
            rows.append((now, _field_value(f), int(f.timestamp), int(f.latencyUsec)))
        ages_ms = sorted(1e3 * now - ts / 1e3 for now, _v, ts, _l in rows)  # read time minus the driver's timestamp
        ts_changes = [rows[i] for i in range(1, len(rows)) if rows[i][2] != rows[i - 1][2]]
        val_changes = [rows[i] for i in range(1, len(rows)) if rows[i][1] != rows[i - 1][1]]
        both = sum(1 for i in range(1, len(rows)) if rows[i][1] != rows[i - 1][1] and rows[i][2] != rows[i - 1][2])
        ts_steps = sorted((b[2] - a[2]) / 1e3 for a, b in itertools.pairwise(ts_changes))
        r.update({
            "reads": len(rows), "value_changes": len(val_changes), "timestamp_changes": len(ts_changes),
            "value_and_timestamp_change_together": both,
            "age_ms_p0_p50_p100": [round(ages_ms[0], 2), round(ages_ms[len(ages_ms) // 2], 2), round(ages_ms[-1], 2)],
            "timestamp_step_ms_p10_p50_p90": ([round(ts_steps[len(ts_steps) // 10], 2), round(ts_steps[len(ts_steps) // 2], 2),
                                               round(ts_steps[int(len(ts_steps) * 0.9)], 2)] if ts_steps else None),
            "latency_usec_p50": sorted(x[3] for x in rows)[len(rows) // 2],
            "first_rows": [[round(a, 6), b, c, d] for a, b, c, d in rows[:3]],
            "change_rows": [[round(a, 6), b, c, d] for a, b, c, d in val_changes[:12]],
        })
        out[name] = r
    # the same counter through the classic call, for its value beside the field's
    fv = nv.nvmlDeviceGetFieldValues(h, [83])[0]
    out["classic_vs_field_mj"] = [float(nv.nvmlDeviceGetTotalEnergyConsumption(h)), _field_value(fv)]
    if load is not None:
        load.wait(30)
    nv.nvmlShutdown()
    return out


def part_sampler(seconds: float) -> dict[str, Any]:
    import sampler

    return {"rates": [sampler.run_once(r, seconds, 1, 0, True) for r in (10.0, 100.0, 1000.0)]}


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp / "run"), XDG_DATA_HOME=str(tmp / "data"), PYTHONUNBUFFERED="1")
    for k in ("JOULED_CONFIG", "JOULED_STORE", "RUNTIME_DIRECTORY"):
        env.pop(k, None)
    return env


def _jouled(tmp: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    # cwd is the temp dir: `python -m` puts its cwd first on sys.path, and the source tree's jouled/ must not shadow
    # an installed wheel
    return subprocess.run([sys.executable, "-m", "jouled", *args], cwd=tmp, env=_env(tmp), capture_output=True,
                          text=True, timeout=timeout_s)


def _start_daemon(tmp: Path, *args: str) -> subprocess.Popen[str]:
    log = (tmp / "daemon.log").open("a")
    return subprocess.Popen([sys.executable, "-m", "jouled", "run", *args], cwd=tmp, env=_env(tmp), stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def _stop(p: subprocess.Popen[Any]) -> int:
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(10)


def part_observer(seconds: float) -> dict[str, Any]:
    from observer import steady_cost

    from tests.brokers import free_port

    out: dict[str, Any] = {}
    for rate in (10.0, 100.0):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            cfg = tmp / "jouled.toml"
            cfg.write_text(f'[store]\npath = "{tmp}/obs.db"\n[mqtt]\nembedded_port = {free_port()}\n'
                           'embedded_auth = false\n[sources.estimate]\nenabled = false\n')
            p = _start_daemon(tmp, "--config", str(cfg), "--rate", str(rate), "--source", "nvml")
            try:
                r = steady_cost(p, seconds, 6.0)  # type: ignore[arg-type]
            finally:
                _stop(p)
            out[f"{rate:g}hz"] = r
    return out


def _config(tmp: Path, port: int) -> Path:
    cfg = tmp / "jouled.toml"
    cfg.write_text(
        f'[store]\npath = "{tmp}/log.db"\n'
        f'[mqtt]\nembedded_port = {port}\nembedded_auth = false\n'
        "[sources.smi]\nenabled = true\nrate_hz = 10\n"  # the comparison source: nvidia-smi polled at 10 Hz
    )
    return cfg


def _summary(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per source: energy and samples per epoch, the flags seen, the method used."""
    by: dict[str, dict[str, list[Any]]] = {}
    for row in epochs:
        key = f"{row.get('source')}:{row.get('device')}"
        d = by.setdefault(key, {"energy_j": [], "samples": [], "flags": [], "method": [], "duration_s": []})
        d["energy_j"].append(row.get("energy_j"))
        d["samples"].append(row.get("samples"))
        d["flags"].append(row.get("flags"))
        d["method"].append(row.get("method"))
        d["duration_s"].append(row.get("duration_s"))
    out: dict[str, Any] = {}
    for key, d in by.items():
        samples = [s for s in d["samples"] if isinstance(s, int | float)]
        flags = sorted({f for fl in d["flags"] if fl for f in (fl if isinstance(fl, list) else str(fl).split(","))})
        out[key] = {
            "epochs": len(d["energy_j"]),
            "energy_j_total": round(sum(e for e in d["energy_j"] if isinstance(e, int | float)), 2),
            "samples_min": min(samples) if samples else None,
            "samples_median": statistics.median(samples) if samples else None,
            "epochs_under_10_samples": sum(1 for s in samples if s < 10),
            "methods": sorted({str(m) for m in d["method"]}),
            "flags_seen": flags,
            "epochs_flagged": sum(1 for fl in d["flags"] if fl),
        }
    return out


def part_training(device: str, long_batches: int, short_epochs: int) -> dict[str, Any]:
    from tests.brokers import free_port

    out: dict[str, Any] = {"device": device}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = _config(tmp, free_port())
        src = _jouled(tmp, "sources", "--format", "json", "--config", str(cfg))
        out["sources"] = json.loads(src.stdout) if src.returncode == 0 else src.stderr.strip()
        daemon = _start_daemon(tmp, "--config", str(cfg))
        time.sleep(4.0)  # broker up, sources open
        store = f"sqlite:///{tmp}/log.db"
        runs = {
            # epochs of several seconds
            "long": ["--epochs", "3", "--batch-size", "256", "--channels", "32", "--cells", "5",
                     "--train-samples", str(256 * long_batches)],
            # epochs under a second: the study's short epochs, where polling leaves few samples
            "short": ["--epochs", str(short_epochs), "--batch-size", "128", "--channels", "16", "--cells", "5",
                      "--max-batches", "6"],
        }
        try:
            for label, extra in runs.items():
                run_id = f"gpu-check-{label}"
                t0 = time.perf_counter()
                tr = _jouled(tmp, "train", "--config", str(cfg), "--device", device, "--dataset", "synthetic",
                             "--arch", ARCH, "--run-id", run_id, "--format", "json", "--no-progress", *extra,
                             timeout_s=300)
                r: dict[str, Any] = {"argv": extra, "wall_s": round(time.perf_counter() - t0, 2), "rc": tr.returncode}
                if tr.returncode != 0:
                    r["stderr"] = tr.stderr[-3000:]
                    out[label] = r
                    continue
                try:
                    r["train"] = json.loads(tr.stdout)
                except ValueError:
                    r["train_stdout"] = tr.stdout[-2000:]
                time.sleep(2.0)  # the last samples past the run's end marker reach the log (flush 1 s)
                ep = _jouled(tmp, "energy", "epochs", "--run", run_id, "--format", "json", "--store", store,
                             "--config", str(cfg))
                if ep.returncode == 0:
                    rows = json.loads(ep.stdout)
                    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
                    r["epochs"] = rows
                    r["per_source"] = _summary(rows)
                else:
                    r["epochs_error"] = ep.stderr[-2000:]
                asr = _jouled(tmp, "assess", "--run", run_id, "--format", "json", "--store", store, "--config", str(cfg))
                r["assess"] = json.loads(asr.stdout) if asr.returncode == 0 else asr.stderr[-2000:]
                out[label] = r
        finally:
            st = _jouled(tmp, "status", "--format", "json", "--config", str(cfg))
            out["daemon_status"] = json.loads(st.stdout) if st.returncode == 0 else st.stderr[-1500:]
            out["daemon_rc"] = _stop(daemon)
            out["daemon_log_tail"] = (tmp / "daemon.log").read_text()[-3000:]
    return out


def part_throughput(rounds: int, steps: int) -> dict[str, Any]:
    from tests.brokers import free_port

    got: dict[str, list[float]] = {"off": [], "on_100hz": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        cfg = _config(tmp, port)
        base = [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--device", "cuda", "--steps", str(steps),
                "--repeats", "1", "--batch-size", "256", "--channels", "32", "--cells", "5"]

        def one(label: str, mqtt: bool) -> float:
            res = tmp / f"{label}.json"
            argv = [*base, "--label", label, "--output", str(res)]
            if mqtt:
                argv += ["--mqtt-url", f"mqtt://127.0.0.1:{port}"]
            subprocess.run(argv, cwd=tmp, env=_env(tmp), check=True, capture_output=True, timeout=300)
            data = json.loads(res.read_text())
            row = data.get(label, data)
            return float(row["samples_per_s_median"])

        for _ in range(rounds):
            got["off"].append(one("off", False))
            daemon = _start_daemon(tmp, "--config", str(cfg), "--rate", "100")
            try:
                time.sleep(4.0)
                got["on_100hz"].append(one("on", True))
            finally:
                _stop(daemon)
    off = statistics.median(got["off"])
    return {"rounds": rounds, "steps": steps, "samples_per_s": {k: [round(x, 1) for x in v] for k, v in got.items()},
            "ratio_on_off": round(statistics.median(got["on_100hz"]) / off, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--sampler-seconds", type=float, default=5.0)
    ap.add_argument("--observer-seconds", type=float, default=20.0)
    ap.add_argument("--long-batches", type=int, default=200, help="batches per epoch of the long-epoch run")
    ap.add_argument("--short-epochs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (0: skip)")
    ap.add_argument("--only", default="", help="comma-separated parts to run (default: all)")
    args = ap.parse_args()
    try:
        _nvml()
        has_gpu = True
    except Exception as e:  # pynvml missing or no driver: the check of the script itself on a CPU machine
        has_gpu = False
        no_gpu = f"{type(e).__name__}: {e}"
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
                   f"{round(psutil.virtual_memory().total / 2**30)} GiB",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "nvml": part_nvml,
        "fields": part_fields,
        "sampler": lambda: part_sampler(args.sampler_seconds),
        "observer": lambda: part_observer(args.observer_seconds),
        "training": lambda: part_training("cuda" if has_gpu else "cpu", args.long_batches, args.short_epochs),
        "throughput": lambda: part_throughput(args.rounds, 60) if args.rounds else {"skipped": "--rounds 0"},
    }
    only = set(filter(None, args.only.split(",")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name, fn in parts.items():
        if only and name not in only:
            continue
        if not has_gpu and name != "training":
            results[name] = {"skipped": f"no NVML here ({no_gpu})"}
            continue
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception:
            results[name] = {"error": traceback.format_exc()[-3000:]}
        results[name]["part_s"] = round(time.perf_counter() - t0, 1)
        print(f"== {name} ({results[name]['part_s']} s)", json.dumps(results[name])[:1500], flush=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
