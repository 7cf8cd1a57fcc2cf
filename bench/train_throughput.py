"""Benchmark: training throughput (samples/s) of a small NB201 cell for a fixed number of SGD steps.

Meant to be run twice, with the daemon off and on (`--label daemon-off` / `--label daemon-on`), to see
what sampling costs the training; each label's result is merged into bench/results/train_throughput.json.
Optionally publishes an epoch/phase marker pair every `--marker-every` steps to a broker, to price markers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jouled.trainer.data import synthetic_tensors
from jouled.trainer.nb201 import EXAMPLE_ARCH_STR, TinyNetwork
from jouled.trainer.train import gpu_names, make_optimizer, resolve_device

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "bench" / "results" / "train_throughput.json"


def measure(args: argparse.Namespace, markers: Any | None) -> dict[str, Any]:
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    net = TinyNetwork(args.arch, args.channels, args.cells, 10, 3).to(dev)
    opt, _ = make_optimizer(net, 1, 0.05)
    x_all, y_all, _, _ = synthetic_tensors(n_train=args.batch_size * 8, n_eval=10, image_size=args.image_size)
    batches = [(x_all[i : i + args.batch_size].to(dev), y_all[i : i + args.batch_size].to(dev))
               for i in range(0, len(x_all), args.batch_size)]
    loss_fn = nn.CrossEntropyLoss()
    net.train()

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    run = markers.run(f"bench-{int(time.time())}", arch=args.arch, gpus=gpu_names(dev)).start() if markers else None
    step_s: list[float] = []
    t0 = time.perf_counter()
    epoch = 0
    for i in range(args.steps):
        if run is not None and i % args.marker_every == 0:
            if i:
                run.end_phase("train", epoch)
                run.end_epoch(epoch)
                epoch += 1
            run.start_epoch(epoch)
            run.start_phase("train", epoch)
        ts = time.perf_counter()
        step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        step_s.append(time.perf_counter() - ts)
    total_s = time.perf_counter() - t0
    if run is not None:
        run.end_phase("train", epoch)
        run.end_epoch(epoch)
        run.end()
    samples = args.steps * args.batch_size
    return {
        "samples_per_s": samples / total_s,
        "total_s": total_s,
        "step_ms_median": statistics.median(step_s) * 1e3,
        "step_ms_p95": sorted(step_s)[int(0.95 * (len(step_s) - 1))] * 1e3,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=40, help="timed SGD steps per repeat")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--channels", type=int, default=16, help="NB201 C")
    p.add_argument("--cells", type=int, default=1, help="NB201 N (cells per stage)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--arch", default=EXAMPLE_ARCH_STR)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--label", default="baseline", help="key of this result in the JSON (e.g. daemon-off, daemon-on)")
    p.add_argument("--mqtt-url", default="", help="publish markers to this broker (default: no markers)")
    p.add_argument("--marker-every", type=int, default=10, help="steps per marked epoch when --mqtt-url is set")
    p.add_argument("--output", type=Path, default=RESULT)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    markers = None
    if args.mqtt_url:
        from jouled.trainer.markers import MarkerClient

        markers = MarkerClient(args.mqtt_url)
    try:
        runs = [measure(args, markers) for _ in range(args.repeats)]
    finally:
        if markers is not None:
            markers.close(timeout_s=5.0)
    rates = [r["samples_per_s"] for r in runs]
    result = {
        "label": args.label,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": args.device},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "output"},
        "samples_per_s_median": statistics.median(rates),
        "samples_per_s_min": min(rates),
        "samples_per_s_max": max(rates),
        "repeats": runs,
    }
    print(f"{args.label}: {result['samples_per_s_median']:.1f} samples/s (median of {args.repeats}; "
          f"min {min(rates):.1f}, max {max(rates):.1f}); step median "
          f"{statistics.median(r['step_ms_median'] for r in runs):.1f} ms")
    out: dict[str, Any] = {}
    if args.output.exists():
        out = json.loads(args.output.read_text())
    out[args.label] = result
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
