"""`jouled service install|uninstall`: put the systemd unit, the config and the RAPL tmpfiles rule in place."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from jouled.cli_common import make_app
from jouled.errors import UserError
from jouled.secrets import new_password

service_app = make_app(help="Install or remove jouled as a systemd service.")

UNIT = "etc/systemd/system/jouled.service"
CONFIG = "etc/jouled/jouled.toml"
TMPFILES = "etc/tmpfiles.d/jouled-rapl.conf"
# The embedded broker's password (the config's [mqtt] password_file, the unit's LoadCredential=mqtt-password):
# generated once, kept across reinstalls (clients configured with it keep working), 0640 root:jouled like the config
MQTT_PASSWORD = "etc/jouled/mqtt-passwd"
# The config can hold secrets ([mqtt] password, InfluxDB credentials): readable by root and the service's group
# (the unit runs as User=jouled, Group=jouled), by nobody else.
CONFIG_MODE = 0o640
PUBLIC_MODE = 0o644  # the unit and the tmpfiles rule: systemd reads them, they hold nothing secret
SERVICE_GROUP = "jouled"


def asset(name: str) -> str:
    """A file of systemd/ (package data `jouled.systemd`), the same for a source checkout and a wheel."""
    try:
        return resources.files("jouled.systemd").joinpath(name).read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        raise UserError(f"jouled.systemd/{name}: missing from this install — reinstall jouled (pip install jouled)") from None


def jouled_binary() -> str:
    """The `jouled` of the environment running now: beside this interpreter (a venv's bin/), else on PATH.

    `sudo /opt/jouled/bin/jouled service install` has no /opt/jouled/bin on PATH, so PATH comes second.
    """
    beside = Path(sys.executable).parent / "jouled"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    exe = shutil.which("jouled")
    if exe:
        return str(Path(exe).resolve())
    return f"{sys.executable} -m jouled.cli"


def render_unit(binary: str) -> str:
    return asset("jouled.service").replace("@JOULED@", binary)


@dataclass(frozen=True)
class Planned:
    path: Path
    text: str
    mode: int
    action: str  # "write" | "keep"


def plan_install(root: Path, force: bool) -> list[Planned]:
    """What `service install` writes, without touching the disk (shared by --dry-run and the real install)."""
    cfg = root / CONFIG
    return [
        Planned(root / UNIT, render_unit(jouled_binary()), PUBLIC_MODE, "write"),
        Planned(cfg, asset("jouled.toml"), CONFIG_MODE, "write" if force or not cfg.exists() else "keep"),
        Planned(root / TMPFILES, asset("jouled-rapl.conf"), PUBLIC_MODE, "write"),
        Planned(root / MQTT_PASSWORD, new_password() + "\n", CONFIG_MODE, "keep" if (root / MQTT_PASSWORD).exists() else "write"),
    ]


def _write(p: Planned) -> None:
    p.path.parent.mkdir(parents=True, exist_ok=True)
    # created with its final mode, so a secret-holding config is never world-readable, not even for a moment
    fd = os.open(p.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, p.mode)
    with os.fdopen(fd, "w") as f:
        f.write(p.text)
    os.chmod(p.path, p.mode)  # an existing file keeps its old mode through O_CREAT
    if p.mode == CONFIG_MODE and os.geteuid() == 0:
        try:
            os.chown(p.path, 0, grp.getgrnam(SERVICE_GROUP).gr_gid)
        except KeyError:
            pass  # no jouled group (a staging --root): root-only until the package's postinst creates it


def _is_live(root: Path) -> bool:
    return root.resolve() == Path("/")


def _systemctl(*args: str, root: Path) -> None:
    if not _is_live(root) or shutil.which("systemctl") is None:
        return  # installing into a staging root (packaging, tests): nothing to reload
    subprocess.run(["systemctl", *args], check=False)


def _ensure_user() -> None:
    if shutil.which("useradd") and subprocess.run(["id", SERVICE_GROUP], capture_output=True).returncode:
        subprocess.run(["useradd", "--system", "--home", "/var/lib/jouled", "--shell", "/usr/sbin/nologin", SERVICE_GROUP],
                       check=False)


@service_app.command("install")
def install(
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="install under this root (packaging, tests)")] = Path("/"),
    enable: Annotated[bool, typer.Option("--enable/--no-enable", help="systemctl enable --now (only with --root /)")] = True,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing /etc/jouled/jouled.toml")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be written and run; change nothing")] = False,
) -> None:
    """Write the unit (ExecStart = this jouled), the example config (kept if present) and the RAPL tmpfiles rule."""
    plan = plan_install(root, force)
    live = _is_live(root)
    if dry_run:
        for p in plan:
            if p.action == "keep":
                why = "exists; --force overwrites it" if p.path.name != "mqtt-passwd" else "exists: the broker password is kept"
                typer.echo(f"would keep {p.path} ({why})")
            else:
                typer.echo(f"would write {p.path} (mode {p.mode:04o}, {len(p.text.splitlines())} lines)")
        typer.echo("  " + next(line for line in plan[0].text.splitlines() if line.startswith("ExecStart=")))
        if live:
            typer.echo(f"would run: useradd --system {SERVICE_GROUP} (if missing), systemctl daemon-reload"
                       + (", systemctl enable --now jouled.service" if enable else ""))
        return
    if live:
        _ensure_user()  # first: the config is chowned to its group
    try:
        for p in plan:
            if p.action == "write":
                _write(p)
    except PermissionError as e:
        raise UserError(f"{e.filename}: permission denied — run `sudo jouled service install` or pass --root DIR") from None
    for p in plan:
        typer.echo(f"{'installed' if p.action == 'write' else 'kept existing'} {p.path}")
    _systemctl("daemon-reload", root=root)
    if enable:
        _systemctl("enable", "--now", "jouled.service", root=root)


@service_app.command("uninstall")
def uninstall(
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="the root it was installed under")] = Path("/"),
    purge: Annotated[bool, typer.Option("--purge", help="also remove /etc/jouled/jouled.toml and mqtt-passwd")] = False,
) -> None:
    """Stop and remove the unit and the tmpfiles rule (the config and the log stay unless --purge)."""
    _systemctl("disable", "--now", "jouled.service", root=root)
    removed = []
    for rel in (UNIT, TMPFILES, *((CONFIG, MQTT_PASSWORD) if purge else ())):
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
