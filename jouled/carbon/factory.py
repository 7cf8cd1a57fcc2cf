"""Build a carbon provider from the [carbon] config section; secrets come from files or the environment only."""

from __future__ import annotations

import os
from collections.abc import Mapping

from jouled.carbon.base import CarbonProvider
from jouled.carbon.carbonaware import CarbonAwareSdk
from jouled.carbon.electricitymaps import DEFAULT_URL as EM_URL
from jouled.carbon.electricitymaps import ElectricityMaps
from jouled.carbon.http import HttpFetcher
from jouled.carbon.resilient import ConstantProvider, Resilient
from jouled.carbon.trace import TraceProvider
from jouled.carbon.ukci import DEFAULT_URL as UK_URL
from jouled.carbon.ukci import UkCarbonIntensity
from jouled.carbon.watttime import DEFAULT_URL as WT_URL
from jouled.carbon.watttime import WattTime
from jouled.config import CarbonConfig
from jouled.errors import UserError

PROVIDERS = ("electricitymaps", "watttime", "ukci", "carbonaware", "trace", "constant")


def read_token(cfg: CarbonConfig, environ: Mapping[str, str] | None = None) -> str:
    """The API token: the systemd credential ``carbon-token`` (inside the service), else ``token_file`` (first line),
    else $JOULED_CARBON_TOKEN, else ''."""
    from jouled.secrets import CARBON_TOKEN, credential_path, read_secret_file, remember_secret

    env = os.environ if environ is None else environ
    cred = credential_path(CARBON_TOKEN, env)
    if cred is not None:
        return read_secret_file(cred, f"carbon token (systemd credential {CARBON_TOKEN})")
    remember_secret(env.get("JOULED_CARBON_TOKEN", "").strip())  # masked in every log line
    if cfg.token_file:
        return read_secret_file(cfg.token_file, "[carbon] token_file")
    return env.get("JOULED_CARBON_TOKEN", "").strip()


def make_provider(
    cfg: CarbonConfig,
    *,
    column: str = "direct",
    resilient: bool = False,
    fallback_g_per_kwh: float | None = None,
    environ: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> CarbonProvider:
    """The provider named by ``cfg.provider`` (base URL override from ``cfg.url``); wrapped in ``Resilient``
    when asked. No provider but ``constant_g_per_kwh`` > 0 gives a ConstantProvider."""
    env = os.environ if environ is None else environ
    name = cfg.provider.strip().lower()
    if not name and cfg.constant_g_per_kwh > 0:
        name = "constant"
    if not name:
        raise UserError(
            f"carbon provider: none configured — set [carbon] provider to one of {', '.join(PROVIDERS)} or pass --provider"
        )
    url = cfg.url.strip()
    p: CarbonProvider
    if name == "electricitymaps":
        token = read_token(cfg, env)
        if not token:
            raise UserError(
                "carbon provider electricitymaps: no API token — put it in the file named by "
                "[carbon] token_file or in $JOULED_CARBON_TOKEN"
            )
        p = ElectricityMaps(token, fetcher=HttpFetcher(name, url or EM_URL, timeout_s=timeout_s))
    elif name == "watttime":
        user = cfg.username or env.get("JOULED_CARBON_USERNAME", "")
        password = cfg.password or env.get("JOULED_CARBON_PASSWORD", "") or read_token(cfg, env)
        if not user or not password:
            raise UserError(
                "carbon provider watttime: no credentials — set [carbon] username and password "
                "(or JOULED_CARBON_USERNAME / JOULED_CARBON_PASSWORD, or the password in token_file)"
            )
        p = WattTime(user, password, fetcher=HttpFetcher(name, url or WT_URL, timeout_s=timeout_s))
    elif name == "ukci":
        p = UkCarbonIntensity(fetcher=HttpFetcher(name, url or UK_URL, timeout_s=timeout_s))
    elif name == "carbonaware":
        if not url:
            raise UserError(
                "carbon provider carbonaware: no base URL — set [carbon] url to your Carbon Aware SDK "
                "web API, e.g. http://127.0.0.1:5073"
            )
        p = CarbonAwareSdk(url, fetcher=HttpFetcher(name, url, timeout_s=timeout_s))
    elif name == "trace":
        if not cfg.trace_file:
            raise UserError("carbon provider trace: no trace file — set [carbon] trace_file to a CSV trace")
        p = TraceProvider(cfg.trace_file, column=column, zone="")
    elif name == "constant":
        if cfg.constant_g_per_kwh <= 0:
            raise UserError("carbon provider constant: constant_g_per_kwh is 0 — set [carbon] constant_g_per_kwh")
        p = ConstantProvider(cfg.constant_g_per_kwh)
    else:
        raise UserError(f"carbon provider {cfg.provider!r}: unknown — use one of {', '.join(PROVIDERS)}")
    return Resilient(p, fallback_g_per_kwh) if resilient else p
