"""CLI start-up: wall time (median of N runs) and modules imported by `python -m jouled.cli` for --help, --version,
`sources --format json` and `status`, for this tree and, with --before REV, for an earlier commit.

Each tree is laid out as the installed package would be (jouled/ with daemon/, trainer/, scheduler/ mounted inside)
and put first on PYTHONPATH, with the same venv, a fresh HOME and no JOULED_* variables, so the two trees differ only
in their code. One warm-up run per command first (it writes the .pyc files), then N timed runs.

    .venv/bin/python bench/cli_startup.py --before 5360348 --runs 10
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "--version": ["--version"],
    "sources --format json": ["sources", "--format", "json"],
    "status": ["status"],
}
# modules a command that does not need them should not pay for
HEAVY = ("httpx", "numpy", "pydantic", "rich.console", "jouled.config", "jouled.store.sqlite", "jouled.daemon",
         "jouled.scheduler", "jouled.trainer", "torch", "amqtt", "paho")
COMPONENTS = {"daemon": "daemon", "trainer": "trainer", "scheduler": "scheduler", "systemd": "systemd"}


def layout(src: Path, dest: Path) -> Path:
    """dest/jouled: the files of src/jouled with src/daemon, trainer, scheduler, systemd mounted inside (symlinks)."""
    pkg = dest / "jouled"
    pkg.mkdir(parents=True)
    for entry in (src / "jouled").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry.resolve())
    for name, folder in COMPONENTS.items():
        if (src / folder).is_dir():
            (pkg / name).symlink_to((src / folder).resolve())
    return dest


def checkout(rev: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def env_for(path: Path, home: Path) -> dict[str, str]:
    # without PYTHONDONTWRITEBYTECODE (set on this project's VM): the warm-up writes the .pyc files an installed
    # wheel has, so the timed runs import as a user's would, not compiling every module again
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULED_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(path), HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_STATE_HOME=str(home / "state"),
               XDG_CONFIG_HOME=str(home / "config"), XDG_RUNTIME_DIR=str(home / "run"), COLUMNS="80", TERM="dumb")
    return env


def measure(path: Path, home: Path, runs: int) -> dict[str, Any]:
    env = env_for(path, home)
    where = subprocess.run([sys.executable, "-c", "import jouled; print(jouled.__file__)"], env=env, cwd=home,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(path)), f"jouled imported from {where}, not the tree under test {path}"
    out: dict[str, Any] = {}
    for label, args in COMMANDS.items():
        cmd = [sys.executable, "-m", "jouled.cli", *args]
        subprocess.run(cmd, env=env, cwd=home, capture_output=True)  # warm-up: .pyc files
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=home, capture_output=True)
            times.append(time.perf_counter() - t0)
        imp = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], env=env, cwd=home, capture_output=True, text=True)
        modules = [line.split("|")[-1].strip() for line in imp.stderr.splitlines() if line.startswith("import time:")][1:]
        out[label] = {
            "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4),
            "modules": len(modules),
            "heavy_imported": [h for h in HEAVY if any(m == h or m.startswith(h + ".") for m in modules)],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", metavar="REV", help="also measure this commit (the tree before a change)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cli_startup.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "home").mkdir()
        subprocess.run([sys.executable, "-c", "pass"])  # warm the interpreter
        py_times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"])
            py_times.append(time.perf_counter() - t0)
        result: dict[str, Any] = {
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "runs": a.runs,
            "python_bare_median_s": round(statistics.median(py_times), 4),
            "after": {"rev": "working tree", **measure(layout(REPO, t / "after"), t / "home", a.runs)},
        }
        if a.before:
            rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", a.before], capture_output=True, text=True,
                                 check=True).stdout.strip()
            src = checkout(a.before, t / "before-src")
            result["before"] = {"rev": rev, **measure(layout(src, t / "before"), t / "home", a.runs)}
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
