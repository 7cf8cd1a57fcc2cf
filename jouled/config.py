"""Configuration: TOML file + JOULED_<SECTION>_<KEY> environment overrides, validated with one-line errors."""

from __future__ import annotations

import contextlib
import copy
import difflib
import logging
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from jouled.errors import UserError
from jouled.userfile import read_user_text

SYSTEM_CONFIG = Path("/etc/jouled/jouled.toml")


class ConfigError(ValueError):
    """One invalid value: where (``loc``, the key path), what was given, and what it should be."""

    def __init__(self, loc: tuple[str, ...], message: str, value: Any = None, *, unknown: bool = False) -> None:
        super().__init__(message)
        self.loc, self.message, self.value, self.unknown = loc, message, value, unknown


def num(default: float, *, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    """A numeric key with its bounds (checked by `_Section.from_dict`)."""
    return field(default=default, metadata={"gt": gt, "ge": ge, "le": le})


_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})
_INT = re.compile(r"\s*[+-]?\d+\s*")


def _coerce(value: Any, ann: Any, loc: tuple[str, ...]) -> Any:
    """``value`` as type ``ann`` (str, int, float, bool, Literal[...], list[...], a section): the lax conversions a
    TOML file and the environment need ("10" → 10.0, "false" → False), nothing looser."""
    origin = get_origin(ann)
    if origin is Literal:
        choices = get_args(ann)
        if value not in choices:
            raise ConfigError(loc, f"should be one of {', '.join(repr(c) for c in choices)}", value)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(loc, "should be a list", value)
        (item,) = get_args(ann)
        return [_coerce(v, item, (*loc, str(i))) for i, v in enumerate(value)]
    if isinstance(ann, type) and issubclass(ann, _Section):
        if not isinstance(value, dict):
            raise ConfigError(loc, "should be a table of keys", value)
        return ann.from_dict(value, loc)
    if ann is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(loc, "should be true or false", value)
    if ann is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT.fullmatch(value):
            return int(value)
        raise ConfigError(loc, "should be a whole number", value)
    if ann is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
        raise ConfigError(loc, "should be a number", value)
    if ann is str:
        if isinstance(value, str):
            return value
        raise ConfigError(loc, "should be a string (in quotes)", value)
    raise TypeError(f"config {'.'.join(loc)}: no conversion to {ann!r}")  # a key type not handled here: a bug


_BOUNDS = (("gt", "greater than", lambda a, b: a > b), ("ge", "at least", lambda a, b: a >= b),
           ("le", "at most", lambda a, b: a <= b))


def _check_bounds(v: Any, meta: Mapping[str, Any], loc: tuple[str, ...], given: Any) -> None:
    if not isinstance(v, int | float) or isinstance(v, bool) or not any(meta.get(k) is not None for k, _w, _f in _BOUNDS):
        return
    if not math.isfinite(v):
        raise ConfigError(loc, "should be a finite number", given)
    for key, word, ok in _BOUNDS:
        bound = meta.get(key)
        if bound is not None and not ok(v, bound):
            raise ConfigError(loc, f"should be {word} {bound:g}", given)


class _Section:
    """A config section: a dataclass whose keys are checked when it is built from a dict (unknown keys, types,
    bounds), with one-line errors.

    Plain dataclasses and this small checker instead of pydantic: the daemon loads its config once, and pydantic's
    core and schemas were ~16 MB of the daemon's resident memory (bench/observer.py).
    """

    _given: frozenset[str] = frozenset()

    @classmethod
    def keys(cls) -> dict[str, tuple[Any, Any]]:
        """key → (its type, its dataclass field), resolved once per class."""
        cached = cls.__dict__.get("_keys_cache")
        if cached is None:
            hints = get_type_hints(cls)
            cached = {f.name: (hints[f.name], f) for f in fields(cls)}  # type: ignore[arg-type]
            cls._keys_cache = cached  # type: ignore[attr-defined]
        return cached  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any], loc: tuple[str, ...] = ()) -> S:
        """Build from a TOML table (or the environment's values), checking every key."""
        known = cls.keys()
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known or known[key][1].metadata.get("internal"):
                public = [k for k, (_a, f) in known.items() if not f.metadata.get("internal")]
                close = difflib.get_close_matches(key, public, n=1)
                raise ConfigError((*loc, key), f"did you mean '{close[0]}'?" if close else "unknown key", unknown=True)
            ann, f = known[key]
            v = _coerce(value, ann, (*loc, key))
            _check_bounds(v, f.metadata, (*loc, key), value)
            kwargs[key] = v
        obj = cls(**kwargs)
        obj._given = frozenset(kwargs)
        return obj

    def was_set(self, key: str) -> bool:
        """Whether the file or the environment gave ``key``, or code set it to something other than its default."""
        if key in self._given:
            return True
        f = self.keys()[key][1]
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        return bool(getattr(self, key) != default)

    def copy(self: S) -> S:
        """A deep copy (a command may change its copy without touching the loaded config)."""
        return copy.deepcopy(self)


S = TypeVar("S", bound=_Section)


@dataclass(kw_only=True)
class DaemonConfig(_Section):
    host: str = field(default_factory=socket.gethostname)
    status_path: str = ""  # empty: the runtime dir, "<store stem>-<hash>.status.json" (jouled.statusfile)
    # 2 s: each flush is one SQLite transaction whose cost hardly depends on its samples (12 series: ~0.5 ms of CPU
    # hot, ~1.4 ms after a sleep on a VM: at 1 s, the larger part of an idle daemon's store thread; 0.5 s cost a sixth
    # more CPU than 1 s; bench/results/observer.json). A crash loses at most about one interval; a query right after
    # a run waits for the flush that covers its end (jouled.query.wait_live), so the interval costs no window samples
    flush_interval_s: float = num(2.0, gt=0)
    # the status file (and the copy beside the log, every 30 s at most); `jouled status` asks the daemon live on the
    # socket beside it (daemon/statussock.py), so the file is for readers that cannot reach the socket and for the
    # last status after exit. At 1 s its rewrite was about a tenth of an idle daemon's CPU.
    health_interval_s: float = num(10.0, gt=0)
    # sources that never wait on I/O (NVML, RAPL, the estimate) share one sampling thread: one wake-up per tick
    shared_sampling_thread: bool = True


@dataclass(kw_only=True)
class StoreConfig(_Section):
    path: str = ""  # empty: $XDG_DATA_HOME/jouled/jouled.db
    raw_retention_days: float = num(7.0, gt=0)
    aggregate_retention_days: float = num(365.0, gt=0)
    aggregate_period_s: float = num(1.0, gt=0)


@dataclass(kw_only=True)
class InfluxConfig(_Section):
    url: str = ""
    api: Literal["v1", "v2"] = "v1"
    database: str = "jouled"
    username: str = ""
    password: str = ""  # prefer password_file, or the systemd credential influx-password
    password_file: str = ""
    org: str = ""
    bucket: str = "jouled"
    token_file: str = ""  # v2 token (jouled.secrets: systemd credential influx-token > token_file > $JOULED_INFLUX_TOKEN)
    batch_size: int = num(5000, gt=0)  # points per write request (the forwarder)
    retention_policy: str = ""  # v1: the rp= of each write ('' = the database's default policy)
    timeout_s: float = num(10.0, gt=0)  # one write request's timeout
    max_retry_s: float = num(60.0, gt=0)  # the longest wait between retries while InfluxDB is down or refusing
    disk_budget_mb: float = num(4096.0, ge=0)  # warn when the local log grows past this (0 = never)


@dataclass(kw_only=True)
class MqttConfig(_Section):
    url: str = ""  # empty: embedded broker on 127.0.0.1:1883
    username: str = ""
    password: str = ""  # kept for compatibility: prefer password_file (or the systemd credential mqtt-password)
    password_file: str = ""  # first line = the MQTT password (jouled.secrets: credential > file > password > URL)
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_insecure: bool = False
    embedded_port: int = num(1883, ge=0, le=65535)
    embedded_host: str = "127.0.0.1"  # the embedded broker binds loopback; anything else only with embedded_auth
    embedded_auth: bool = False  # the embedded broker accepts only username (default "jouled") + password
    max_clock_skew_s: float = num(300.0, gt=0)


@dataclass(kw_only=True)
class SourceConfig(_Section):
    enabled: bool = True
    rate_hz: float = num(10.0, gt=0, le=10000)


@dataclass(kw_only=True)
class NvmlConfig(SourceConfig):
    counter_rate_hz: float = num(2.0, gt=0, le=1000)  # the energy counter read costs ms per call
    # the driver's 1-s averaged power, utilisation, SM clock and temperature: four calls per GPU, so not every tick
    # (NVML's utilisation itself is a 1/6-1 s sample); 0.1 to compare instant and averaged power at one rate
    extras_period_s: float = num(1.0, gt=0)
    gpus: list[int] = field(default_factory=list)  # empty: every GPU


@dataclass(kw_only=True)
class RaplConfig(SourceConfig):
    root: str = "/sys/class/powercap"


@dataclass(kw_only=True)
class VisaConfig(SourceConfig):
    enabled: bool = True
    rate_hz: float = num(10.0, gt=0, le=1000)
    resource: str = ""  # empty: source off
    model: Literal["wt310", "wt330", "lmg450", "lmg500", "scpi"] = "wt310"
    backend: str = "@py"  # pyvisa-py; "path/to/sim.yaml@sim" for pyvisa-sim
    timeout_ms: int = num(2000, gt=0)
    element: int = num(1, ge=1)
    update_interval_s: float = num(0.1, gt=0)  # the meter's own update rate (:RATE)
    integrate: bool = True
    # generic SCPI profile
    init_commands: list[str] = field(default_factory=list)
    power_query: str = ""
    energy_query: str = ""
    energy_unit_j: float = num(1.0, gt=0)  # multiply the meter's energy answer to get joules
    read_termination: str = "\n"
    write_termination: str = "\n"


@dataclass(kw_only=True)
class SmiConfig(SourceConfig):
    enabled: bool = False  # a comparison source: opt in
    binary: str = "nvidia-smi"


@dataclass(kw_only=True)
class EstimateConfig(SourceConfig):
    rate_hz: float = num(1.0, gt=0, le=1000)
    tdp_w: float = num(0.0, ge=0)  # 0: look the CPU up, else CodeCarbon's default
    idle_fraction: float = num(0.1, ge=0, le=1)  # P_idle / TDP until calibrated
    only_without_sensors: bool = True


@dataclass(kw_only=True)
class SourcesConfig(_Section):
    nvml: NvmlConfig = field(default_factory=NvmlConfig)
    rapl: RaplConfig = field(default_factory=RaplConfig)
    visa: VisaConfig = field(default_factory=VisaConfig)
    smi: SmiConfig = field(default_factory=SmiConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)


@dataclass(kw_only=True)
class CarbonConfig(_Section):
    provider: str = ""
    zone: str = ""
    url: str = ""  # provider base URL override (self-hosted Carbon Aware SDK, tests)
    token_file: str = ""
    username: str = ""
    password: str = ""
    trace_file: str = ""
    constant_g_per_kwh: float = num(0.0, ge=0)  # used when no provider is configured
    poll_interval_s: float = num(300.0, gt=0)


@dataclass(kw_only=True)
class NasConfig(_Section):
    sampling_power_w: float = num(250.0, gt=0)
    evaluation_power_w: float = num(300.0, gt=0)
    idle_power_w: float = num(50.0, ge=0)
    decision_period_s: float = num(3600.0, gt=0)
    window_h: float = num(24.0, gt=0)


@dataclass(kw_only=True)
class PrometheusConfig(_Section):
    # "host:port" ("[::1]:9464" for IPv6) where the daemon serves /metrics (jouled.daemon.prometheus); empty = off.
    # No auth on /metrics: keep it on loopback unless a firewall or a reverse proxy guards it.
    listen: str = ""


@dataclass(kw_only=True)
class HolisticConfig(_Section):
    # `jouled energy epochs|runs --holistic`: the data centre's PUE multiplies the machine's energy (1: none)
    pue: float = num(1.0, ge=1, le=10)
    calibration: str = ""  # the calibration file (empty: `<log>.calibration.json` beside the log, jouled calibrate)


@dataclass(kw_only=True)
class Config(_Section):
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    influx: InfluxConfig = field(default_factory=InfluxConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    carbon: CarbonConfig = field(default_factory=CarbonConfig)
    nas: NasConfig = field(default_factory=NasConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    holistic: HolisticConfig = field(default_factory=HolisticConfig)
    source_file: str = field(default="", metadata={"internal": True})  # where it was loaded from

    def store_path(self) -> Path:
        if self.store.path:
            return Path(self.store.path).expanduser()
        return default_store_path()

    def status_path(self, store_path: Path | None = None) -> Path:
        """The daemon's status file: [daemon] status_path, else in the runtime dir (jouled.statusfile), so it
        stays writable when the store's disk is full."""
        if self.daemon.status_path:
            return Path(self.daemon.status_path).expanduser()
        from jouled.statusfile import default_status_path

        return default_status_path(store_path or self.store_path())

    def status_paths(self, store_path: Path | None = None) -> list[Path]:
        """Every file `jouled status` looks in (a daemon started elsewhere, the copy beside the log); it reads the
        freshest. Only [daemon] status_path when that is set."""
        if self.daemon.status_path:
            return [Path(self.daemon.status_path).expanduser()]
        from jouled.statusfile import status_candidates

        return status_candidates(store_path or self.store_path())


def default_store_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jouled" / "jouled.db"


# JOULED_* variables that share a section's prefix but are not config keys: secrets and paths that are read
# from the environment only (never from the file), so they must not be taken for misspelled keys.
ENV_NOT_CONFIG: frozenset[str] = frozenset({
    "JOULED_INFLUX_TOKEN",  # InfluxDB v2 token (DESIGN.md: never on the command line or in the file)
    "JOULED_CARBON_TOKEN",  # carbon provider API token (jouled.carbon.factory.read_token)
    "JOULED_NAS_DATA",  # NAS-Bench-201 tables folder (scheduler.space)
})


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """Map JOULED_<SECTION>_<KEY> (and JOULED_SOURCES_<NAME>_<KEY>) onto the config tree.

    Walk the model's own fields so keys with underscores (rate_hz) resolve without guessing. A variable
    under a known section's prefix that names no key is an error, as the same key in the file would be
    (variables that are not config keys at all — JOULED_CONFIG, JOULED_STORE, JOULED_SPOOL_DIR — share
    no section prefix, and the few that do are listed in ENV_NOT_CONFIG).
    """
    out: dict[str, Any] = {}
    used: set[str] = set()
    sections: dict[str, tuple[str, list[str]]] = {}  # env prefix → ([section] label, its keys)

    def walk(model: type[_Section], prefix: str, path: list[str]) -> None:
        keys = []
        for name, (ann, f) in model.keys().items():
            if f.metadata.get("internal"):
                continue
            keys.append(name)
            env = f"{prefix}_{name.upper()}"
            if isinstance(ann, type) and issubclass(ann, _Section):
                walk(ann, env, [*path, name])
            elif env in environ:
                used.add(env)
                node = out
                for p in path:
                    node = node.setdefault(p, {})
                raw = environ[env]
                node[name] = _parse_env_value(raw, ann)
        if path:
            sections[prefix] = (".".join(path), keys)

    walk(Config, "JOULED", [])
    for var in sorted(environ):
        if var in used or var in ENV_NOT_CONFIG:
            continue
        owners = [p for p in sections if var.startswith(p + "_")]
        if not owners:
            continue
        prefix = max(owners, key=len)
        label, keys = sections[prefix]
        rest = var[len(prefix) + 1:]
        if label == "sources":  # a table of tables: the next level names the source
            raise UserError(
                f"environment variable {var}: '{rest.lower()}' names no source key — unset it, or use "
                f"{prefix}_<NAME>_<KEY> with NAME one of {', '.join(k.upper() for k in keys)}"
            )
        raise UserError(
            f"environment variable {var}: [{label}] has no key '{rest.lower()}' — unset it, or use "
            f"{prefix}_<KEY> with KEY one of {', '.join(k.upper() for k in keys)}"
        )
    return out


def _parse_env_value(raw: str, ann: Any) -> Any:
    if getattr(ann, "__origin__", None) is list:
        return [x.strip() for x in raw.split(",") if x.strip()]
    return raw  # from_dict converts "10" → 10.0, "false" → False


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def example_config() -> str:
    """Where the commented example config is on this machine: the installed package's copy (a wheel has no
    systemd/ folder of the source tree)."""
    try:
        from importlib.resources import files

        return str(files("jouled.systemd") / "jouled.toml")
    except (ImportError, TypeError):  # a bare checkout without the package mapping
        return "systemd/jouled.toml"


def _format_error(err: ConfigError, origin: str) -> str:
    key = ".".join(err.loc)
    if err.unknown:
        hint = f" ({err.message})" if err.message.startswith("did you mean") else ""
        return f"{origin}: unknown key '{key}'{hint} — remove it or check its spelling against {example_config()}"
    return f"{origin}: key '{key}' = {err.value!r} is invalid: it {err.message}"


def resolve_config_path(path: str | Path | None, environ: dict[str, str] | None = None) -> Path | None:
    environ = dict(os.environ) if environ is None else environ
    if path:
        return Path(path)
    if environ.get("JOULED_CONFIG"):
        return Path(environ["JOULED_CONFIG"])
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    return None


def _read_toml(cfg_path: Path) -> dict[str, Any]:
    """The config file's TOML; every way it can fail is one line naming the file (and the line) and the fix."""
    text = read_user_text(
        cfg_path, encoding="utf-8",
        missing=f"config {cfg_path}: file not found — pass an existing --config or unset JOULED_CONFIG",
        folder=f"config {cfg_path}: is a folder — pass the TOML file itself (e.g. {cfg_path}/jouled.toml)",
        not_utf8=f"config {cfg_path}: not UTF-8 text (byte {{byte}}) — save it as UTF-8 TOML (see {example_config()})",
        unreadable=f"config {cfg_path}: cannot read ({{strerror}}) — check its permissions",
    )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib (3.11) has no line attribute; its message ends with "(at line L, column C)"
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)$", msg)
        where = f"{cfg_path}:{m.group(1)}" if m else str(cfg_path)
        what = msg[: m.start()].strip() if m else msg
        col = f" column {m.group(2)}" if m else ""
        raise UserError(f"config {where}: not valid TOML ({what}{col}) — fix the syntax on that line") from None


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load the config: file (explicit, $JOULED_CONFIG, /etc/jouled/jouled.toml) < environment."""
    environ = dict(os.environ) if environ is None else environ
    cfg_path = resolve_config_path(path, environ)
    data: dict[str, Any] = {}
    origin = "built-in defaults"
    if cfg_path is not None:
        origin = str(cfg_path)
        data = _read_toml(cfg_path)
    env = _env_overrides(environ)
    try:
        Config.from_dict(data)
    except ConfigError as e:
        raise UserError(_format_error(e, f"config {origin}")) from None
    try:
        cfg = Config.from_dict(_merge(data, env))
    except ConfigError as e:
        raise UserError(_format_error(e, "environment (JOULED_* variables)")) from None
    cfg.source_file = str(cfg_path or "")
    if cfg_path is not None:
        _resolve_relative_paths(cfg, cfg_path.parent)
        _warn_inline_secrets(data, cfg_path)
    return cfg


_INLINE_SECRETS = (("mqtt", "password"), ("influx", "password"), ("carbon", "password"))
_warned_inline: set[str] = set()


def _warn_inline_secrets(data: dict[str, Any], cfg_path: Path) -> None:
    """A password written in a config file others can read: say so once (a <key>_file of mode 0640 is the fix)."""
    inline = [f"[{s}] {k}" for s, k in _INLINE_SECRETS if isinstance(data.get(s), dict) and data[s].get(k)]
    if not inline or str(cfg_path) in _warned_inline:
        return
    from jouled.secrets import exposure_warning

    warning = exposure_warning(cfg_path, f"config holding {' and '.join(inline)}")
    if warning:
        _warned_inline.add(str(cfg_path))
        logging.getLogger("jouled.config").warning("%s, or move it to a password_file of mode 0640", warning)


def _resolve_relative_paths(cfg: Config, base: Path) -> None:
    """Relative file paths in a config file are relative to that file, so examples run from anywhere."""
    v = cfg.sources.visa
    if v.backend.endswith("@sim") and len(v.backend) > 4:
        sim = Path(v.backend[:-4])
        if not sim.is_absolute():
            v.backend = f"{(base / sim).resolve()}@sim"
    for sect, key in (
        ("carbon", "trace_file"), ("carbon", "token_file"), ("influx", "token_file"), ("influx", "password_file"),
        ("mqtt", "password_file"), ("mqtt", "tls_ca"), ("mqtt", "tls_cert"), ("mqtt", "tls_key"),
    ):
        obj = getattr(cfg, sect)
        val = getattr(obj, key)
        if val and not Path(val).is_absolute() and (base / val).exists():
            setattr(obj, key, str((base / val).resolve()))
