"""`jouled service install|uninstall`: put the systemd unit, the config and the RAPL tmpfiles rule in place."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from jouled.cli_common import make_app
from jouled.errors import UserError

service_app = make_app(help="Install or remove jouled as a systemd service.")

REPO_SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = "etc/systemd/system/jouled.service"
CONFIG = "etc/jouled/jouled.toml"
TMPFILES = "etc/tmpfiles.d/jouled-rapl.conf"


def _asset(name: str) -> str:
    """The file from the source tree's systemd/ (editable installs) or the installed package data."""
    p = REPO_SYSTEMD / name
    if p.exists():
        return p.read_text()
    try:
        return resources.files("jouled").joinpath("systemd", name).read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        raise UserError(f"systemd/{name}: not found next to this jouled — reinstall from the source tree") from None


def _jouled_binary() -> str:
    exe = shutil.which("jouled")
    if exe:
        return str(Path(exe).resolve())
    return f"{sys.executable} -m jouled.cli"


def render_unit(binary: str) -> str:
    return _asset("jouled.service").replace("@JOULED@", binary)


def _systemctl(*args: str, root: Path) -> None:
    if str(root) != "/" or shutil.which("systemctl") is None:
        return  # installing into a staging root (packaging, tests): nothing to reload
    subprocess.run(["systemctl", *args], check=False)


@service_app.command("install")
def install(
    root: Annotated[Path, typer.Option("--root", help="install under this root (packaging; default /)")] = Path("/"),
    enable: Annotated[bool, typer.Option("--enable/--no-enable", help="systemctl enable --now")] = True,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing /etc/jouled/jouled.toml")] = False,
) -> None:
    """Write the unit (ExecStart = this jouled), the example config (kept if present) and the RAPL tmpfiles rule."""
    unit, cfg, tmpf = root / UNIT, root / CONFIG, root / TMPFILES
    try:
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(render_unit(_jouled_binary()))
        if force or not cfg.exists():
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(_asset("jouled.toml"))
        tmpf.parent.mkdir(parents=True, exist_ok=True)
        tmpf.write_text(_asset("jouled-rapl.conf"))
    except PermissionError as e:
        raise UserError(f"{e.filename}: permission denied — run `sudo jouled service install` or pass --root DIR") from None
    typer.echo(f"installed {unit}, {cfg}, {tmpf}")
    if str(root) == "/" and shutil.which("useradd") and subprocess.run(["id", "jouled"], capture_output=True).returncode:
        subprocess.run(["useradd", "--system", "--home", "/var/lib/jouled", "--shell", "/usr/sbin/nologin", "jouled"],
                       check=False)
    _systemctl("daemon-reload", root=root)
    if enable:
        _systemctl("enable", "--now", "jouled.service", root=root)


@service_app.command("uninstall")
def uninstall(
    root: Annotated[Path, typer.Option("--root", help="the root it was installed under")] = Path("/"),
    purge: Annotated[bool, typer.Option("--purge", help="also remove /etc/jouled/jouled.toml")] = False,
) -> None:
    """Stop and remove the unit and the tmpfiles rule (the config and the log stay unless --purge)."""
    _systemctl("disable", "--now", "jouled.service", root=root)
    removed = []
    for rel in (UNIT, TMPFILES, *((CONFIG,) if purge else ())):
        p = root / rel
        try:
            p.unlink()
            removed.append(str(p))
        except FileNotFoundError:
            pass
        except PermissionError:
            raise UserError(f"{p}: permission denied — run `sudo jouled service uninstall`") from None
    _systemctl("daemon-reload", root=root)
    typer.echo("removed " + (", ".join(removed) if removed else "nothing (not installed)"))
