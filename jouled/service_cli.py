"""`jouled service install|uninstall`: put the systemd unit, the config and the RAPL tmpfiles rule in place."""

from __future__ import annotations

import contextlib
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
# the ordering drop-in for an InfluxDB on this machine (--with-influxdb)
INFLUX_DROPIN = "etc/systemd/system/jouled.service.d/jouled-influxdb.conf"
# the README, for the unit's Documentation= (from the package's metadata: a wheel carries it there, no network)
DOC = "usr/local/share/doc/jouled/README.md"
# LoadCredential= lines of the unit shipped commented out: enabled when their file exists under the root
OPTIONAL_CREDENTIALS = {
    "influx-token": "/etc/jouled/influx-token",
    "influx-password": "/etc/jouled/influx-password",
    "carbon-token": "/etc/jouled/carbon-token",
}
# groups that own GPU and meter device nodes on common distributions (nvidia nodes are 0666 by default, some set
# NVreg_DeviceFileGID=video; USB serial adapters are dialout on Debian/Fedora, uucp on Arch): the service user joins
# those that exist. SupplementaryGroups= in the unit would fail the start wherever one is missing.
DEVICE_GROUPS = ("video", "render", "dialout", "uucp")
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


def render_unit(binary: str, root: Path = Path("/")) -> str:
    """The unit with ExecStart= this jouled, Documentation= the installed README, and each optional
    LoadCredential= line enabled when its secret file exists under ``root`` (systemd fails a start on a missing one)."""
    text = asset("jouled.service").replace("@JOULED@", binary).replace("@DOC@", "/" + DOC)
    for name, path in OPTIONAL_CREDENTIALS.items():
        if (root / path.lstrip("/")).is_file():
            text = text.replace(f"#LoadCredential={name}:{path}", f"LoadCredential={name}:{path}")
    return text


def readme_text() -> str:
    """The README as the installed package's metadata holds it (its long description); a pointer when it has none."""
    from importlib import metadata

    try:
        body = metadata.metadata("jouled").get_payload()  # type: ignore[attr-defined]
    except metadata.PackageNotFoundError:
        body = None
    if isinstance(body, str) and body.strip():
        return body if body.endswith("\n") else body + "\n"
    return "# jouled\n\nRun `jouled --help`; the README of the jouled source distribution describes the service.\n"


@dataclass(frozen=True)
class Planned:
    path: Path
    text: str
    mode: int
    action: str  # "write" | "keep" (exists, left as it is) | "same" (exists with this text and mode)


def _same(path: Path, text: str, mode: int) -> bool:
    try:
        return path.read_text() == text and path.stat().st_mode & 0o777 == mode
    except (OSError, UnicodeDecodeError):
        return False


def plan_install(root: Path, force: bool, with_influxdb: bool = False) -> list[Planned]:
    """What `service install` writes, without touching the disk (shared by --dry-run and the real install)."""
    cfg = root / CONFIG
    plan = [
        Planned(root / UNIT, render_unit(jouled_binary(), root), PUBLIC_MODE, "write"),
        Planned(cfg, asset("jouled.toml"), CONFIG_MODE, "write" if force or not cfg.exists() else "keep"),
        Planned(root / TMPFILES, asset("jouled-rapl.conf"), PUBLIC_MODE, "write"),
        Planned(root / MQTT_PASSWORD, new_password() + "\n", CONFIG_MODE, "keep" if (root / MQTT_PASSWORD).exists() else "write"),
        Planned(root / DOC, readme_text(), PUBLIC_MODE, "write"),
    ]
    if with_influxdb:
        plan.append(Planned(root / INFLUX_DROPIN, asset("jouled-influxdb.conf"), PUBLIC_MODE, "write"))
    # idempotence: a file that already holds exactly this is not rewritten (and `install` says nothing changed)
    return [Planned(p.path, p.text, p.mode, "same") if p.action == "write" and _same(p.path, p.text, p.mode) else p
            for p in plan]


def _interpreter(binary: Path) -> Path | None:
    """The interpreter a console script's shebang names (a venv's python), None for anything else."""
    try:
        with binary.open("rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    return Path(parts[0]) if parts else None


def unreachable_reasons(paths: list[Path]) -> list[str]:
    """Why the service user (not root, not the owner, ProtectHome=yes) may fail to run these files, one line each.

    A file under /home or /root is hidden by the unit's ProtectHome=yes; elsewhere every folder on the way needs
    o+x and the file o+r (the service user is in nobody's group but its own).
    """
    out: list[str] = []
    for p in dict.fromkeys(paths):
        for q in dict.fromkeys((p, p.resolve())):
            parts = q.parts
            if len(parts) > 1 and parts[1] in ("home", "root"):
                out.append(f"{q} is under /{parts[1]}, which the unit hides from the service (ProtectHome=yes)")
                break
            try:
                if not q.stat().st_mode & 0o004:
                    out.append(f"{q} is not readable by other users (mode {q.stat().st_mode & 0o777:04o})")
                    break
                closed = next((d for d in q.parents if not d.stat().st_mode & 0o001), None)
            except OSError as e:
                out.append(f"{q}: {e.strerror}")
                break
            if closed is not None:
                out.append(f"{q}: its folder {closed} is closed to other users (mode {closed.stat().st_mode & 0o777:04o})")
                break
    return out


def exec_warnings(binary: str) -> list[str]:
    """Warnings about the unit's ExecStart: `jouled` and its interpreter must be reachable by the service user."""
    exe = Path(binary.split()[0])
    paths = [exe]
    interp = _interpreter(exe)
    if interp is not None:
        paths.append(interp)
    return unreachable_reasons(paths)


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


def _check_root(root: Path) -> None:
    """A --root that is a file is one line (it was a traceback); one where no folder can be made fails at the first
    write, with its own line (`install`)."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--root {root}: not a folder — pass the folder to install under (default /)")


def _is_live(root: Path) -> bool:
    return root.resolve() == Path("/")


def _systemctl(*args: str, root: Path) -> None:
    if not _is_live(root) or shutil.which("systemctl") is None:
        return  # installing into a staging root (packaging, tests): nothing to reload
    subprocess.run(["systemctl", *args], check=False)


def _ensure_user() -> None:
    """The system user `jouled` (its own group, no login, home = the state folder), in the device groups that exist."""
    if shutil.which("useradd") and subprocess.run(["id", SERVICE_GROUP], capture_output=True).returncode:
        try:  # the group may exist already (the RAPL rule's instructions create it): join it, else make it
            grp.getgrnam(SERVICE_GROUP)
            group = ["--gid", SERVICE_GROUP]
        except KeyError:
            group = ["--user-group"]
        subprocess.run(["useradd", "--system", *group, "--home-dir", "/var/lib/jouled", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", SERVICE_GROUP], check=False)
    for g in missing_device_groups():
        subprocess.run(["usermod", "--append", "--groups", g, SERVICE_GROUP], check=False)


def missing_device_groups() -> list[str]:
    """DEVICE_GROUPS that exist here and do not list the service user yet."""
    out = []
    for g in DEVICE_GROUPS:
        try:
            members = grp.getgrnam(g).gr_mem
        except KeyError:
            continue
        if SERVICE_GROUP not in members:
            out.append(g)
    return out


def _apply_tmpfiles(root: Path) -> None:
    """Apply the RAPL rule now (systemd-tmpfiles-setup applies it at every boot)."""
    if _is_live(root) and shutil.which("systemd-tmpfiles"):
        subprocess.run(["systemd-tmpfiles", "--create", str(root / TMPFILES)], check=False, capture_output=True)


DONE = {"write": "installed", "keep": "kept existing", "same": "unchanged"}


@service_app.command("install")
def install(
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="install under this root (packaging, tests)")] = Path("/"),
    enable: Annotated[bool, typer.Option("--enable/--no-enable", help="systemctl enable --now (only with --root /)")] = True,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing /etc/jouled/jouled.toml")] = False,
    with_influxdb: Annotated[bool, typer.Option(
        "--with-influxdb", help="also install a drop-in ordering jouled after a local influxdb.service")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be written and run; change nothing")] = False,
) -> None:
    """Write the unit (ExecStart = this jouled), the example config (kept if present) and the RAPL tmpfiles rule.

    Running it again changes only what differs (and says when nothing did).
    """
    _check_root(root)
    plan = plan_install(root, force, with_influxdb)
    live = _is_live(root)
    exec_line = next(line for line in plan[0].text.splitlines() if line.startswith("ExecStart="))
    warnings = exec_warnings(exec_line.removeprefix("ExecStart="))
    changes = [p for p in plan if p.action == "write"]
    if dry_run:
        for p in plan:
            if p.action == "keep":
                why = "exists; --force overwrites it" if p.path.name != "mqtt-passwd" else "exists: the broker password is kept"
                typer.echo(f"would keep {p.path} ({why})")
            elif p.action == "same":
                typer.echo(f"unchanged {p.path}")
            else:
                typer.echo(f"would write {p.path} (mode {p.mode:04o}, {len(p.text.splitlines())} lines)")
        typer.echo("  " + exec_line)
        if live:
            groups = missing_device_groups()
            typer.echo(f"would run: useradd --system {SERVICE_GROUP} (if missing)"
                       + (f", usermod --append --groups {','.join(groups)} {SERVICE_GROUP}" if groups else "")
                       + ", systemd-tmpfiles --create, systemctl daemon-reload"
                       + (", systemctl enable --now jouled.service" if enable else ""))
        for w in warnings:
            typer.echo(f"warning: {w} — install jouled elsewhere (e.g. python3 -m venv /opt/jouled)", err=True)
        return
    if live:
        _ensure_user()  # first: the config is chowned to its group
    try:
        for p in changes:
            _write(p)
    except PermissionError as e:
        raise UserError(f"{e.filename}: permission denied — run `sudo jouled service install` or pass --root DIR") from None
    except OSError as e:  # a --root under which no folder can be made (/proc, a read-only mount, …)
        raise UserError(f"--root {root}: cannot write {e.filename} ({e.strerror}) — pass a writable folder") from None
    for p in plan:
        typer.echo(f"{DONE[p.action]} {p.path}")
    if not changes:
        typer.echo("nothing changed: already installed")
    if not live:
        try:
            grp.getgrnam(SERVICE_GROUP)
            owner = ""
        except KeyError:  # _write gives the secrets to the group only where it exists
            owner = f", the config and broker password root:root (no `{SERVICE_GROUP}` group here)"
        typer.echo(f"staging root {root}: no `{SERVICE_GROUP}` user made{owner}, systemctl not run — the package's "
                   "install scripts do those")
    for w in warnings:
        # a warning, not an error: packaging under --root may install the interpreter later; the service would
        # fail with "Permission denied" or "No such file" at start, which says less than this
        typer.echo(f"warning: {w} — the service cannot start jouled from there; install it elsewhere "
                   "(e.g. python3 -m venv /opt/jouled) and run `service install` from that one", err=True)
    _apply_tmpfiles(root)
    if changes:
        _systemctl("daemon-reload", root=root)
    if enable:
        _systemctl("enable", "--now", "jouled.service", root=root)


@service_app.command("uninstall")
def uninstall(
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="the root it was installed under")] = Path("/"),
    purge: Annotated[bool, typer.Option("--purge", help="also remove /etc/jouled/jouled.toml and mqtt-passwd")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be removed and run; change nothing")] = False,
) -> None:
    """Stop and remove the unit, its drop-in, the README and the tmpfiles rule (the config and the log stay unless --purge)."""
    _check_root(root)
    rels = (UNIT, INFLUX_DROPIN, TMPFILES, DOC, *((CONFIG, MQTT_PASSWORD) if purge else ()))
    if dry_run:
        present = [str(root / rel) for rel in rels if (root / rel).exists()]
        typer.echo("would remove " + (", ".join(present) if present else "nothing (not installed)"))
        if _is_live(root):
            typer.echo("would run: systemctl disable --now jouled.service, systemctl daemon-reload")
        return
    _systemctl("disable", "--now", "jouled.service", root=root)
    removed = []
    for rel in rels:
        p = root / rel
        try:
            p.unlink()
            removed.append(str(p))
        except FileNotFoundError:
            pass
        except PermissionError:
            raise UserError(f"{p}: permission denied — run `sudo jouled service uninstall`") from None
    for d in ((root / INFLUX_DROPIN).parent, (root / DOC).parent):
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty: a drop-in of the admin's own stays
    _systemctl("daemon-reload", root=root)
    typer.echo("removed " + (", ".join(removed) if removed else "nothing (not installed)"))
