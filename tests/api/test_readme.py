"""The README's "Python API" section runs as written: its query and measure blocks against a prepared store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from jouled.trainer import callbacks

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"^## Python API\n(.*?)^## ", text, flags=re.S | re.M)
    assert m, "README has no '## Python API' section"
    return m.group(1)


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", _section(), flags=re.S | re.M)


def _run(code: str, env: dict[str, str]) -> str:
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"README block failed:\n{code}\n{res.stderr[-3000:]}"
    return res.stdout


def test_python_blocks_run_as_written(api_store: str, tmp_path: Path) -> None:
    cfg = tmp_path / "jouled.toml"
    cfg.write_text("[sources.nvml]\nenabled = false\n[sources.estimate]\nonly_without_sensors = false\n")
    env = dict(os.environ, JOULED_STORE=api_store, JOULED_CONFIG=str(cfg), XDG_DATA_HOME=str(tmp_path))
    blocks = _blocks("python")
    query = [b for b in blocks if "jouled.query.open(" in b]
    measure = [b for b in blocks if "with jouled.measure(" in b]
    assert len(query) == 1 and len(measure) == 1
    out = _run(query[0], env)
    assert out.startswith("r1 2100.0 ('nvml:gpu0', 'rapl:package-0')")  # the store of tests/api/conftest.py
    assert "'scope': 'epoch'" in out
    out = _run(measure[0], env)
    energy = float(out.split()[0])
    assert energy > 0


def test_section_names_the_callbacks_and_export() -> None:
    text = _section()
    for name in callbacks._FACTORIES:
        assert f"jouled.trainer.callbacks.{name}" in text
    assert "r.energy(timeout=" in text and "jouled export samples --run" in text
