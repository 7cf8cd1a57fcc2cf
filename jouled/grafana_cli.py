"""`jouled grafana push`: upload jouled's dashboards to a Grafana server (grafana-client, extra `grafana`).

Idempotent: each dashboard has a stable uid and is posted with overwrite=true, so pushing again replaces it. The
token comes from --token-file or $JOULED_GRAFANA_TOKEN, never from the command line (it would show in `ps` and
the shell history). Whatever goes wrong on the way (a bad URL, Grafana down, 401, 403, 404, a refused dashboard) is
one line naming the input and the fix, exit 2.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from jouled.cli_common import ConfigOpt, UnusedStoreOpt, ignore_store, make_app
from jouled.errors import UserError
from jouled.secrets import read_secret_file, redact_url, remember_secret

grafana_app = make_app(help="Upload jouled's Grafana dashboards (InfluxQL, Flux, PromQL).")



@grafana_app.callback()
def _grafana() -> None:
    """Upload jouled's Grafana dashboards (InfluxQL, Flux, PromQL)."""
    # a callback keeps `grafana` a group with its one command (`push`) when run alone, as when mounted


TOKEN_ENV = "JOULED_GRAFANA_TOKEN"
FLAVOURS = ("influxql", "flux", "promql")
# flavour → (dashboard file, the datasource uid it refers to): as grafana/generate.py writes them
DASHBOARDS: dict[str, tuple[str, str]] = {
    "influxql": ("jouled-influxql.json", "jouled-influxql"),
    "flux": ("jouled-flux.json", "jouled-flux"),
    "promql": ("jouled-prometheus.json", "jouled-prometheus"),
}
TIMEOUT_S = 15.0


def parse_datasource_uids(values: Sequence[str]) -> dict[str, str]:
    """`--datasource-uid influxql=abc` (repeatable) → {"influxql": "abc"}."""
    out: dict[str, str] = {}
    for v in values:
        flavour, sep, uid = v.partition("=")
        flavour, uid = flavour.strip().lower(), uid.strip()
        if not sep or flavour not in FLAVOURS or not uid:
            raise UserError(f"--datasource-uid {v!r}: expected FLAVOUR=UID with FLAVOUR one of {', '.join(FLAVOURS)} "
                            "(e.g. --datasource-uid promql=my-prometheus)")
        out[flavour] = uid
    return out


def with_datasource_uid(node: Any, old_uid: str, new_uid: str) -> Any:
    """A copy of the dashboard JSON with every datasource reference to `old_uid` pointing at `new_uid`."""
    if isinstance(node, dict):
        if node.get("uid") == old_uid and "type" in node and set(node) <= {"type", "uid"}:
            return {**node, "uid": new_uid}
        return {k: with_datasource_uid(v, old_uid, new_uid) for k, v in node.items()}
    if isinstance(node, list):
        return [with_datasource_uid(v, old_uid, new_uid) for v in node]
    return node


def load_dashboards(flavours: Sequence[str], uids: Mapping[str, str]) -> list[dict[str, Any]]:
    """The committed dashboards of `flavours`, their datasource uids rewritten as `uids` says."""
    from jouled.grafana import data_dir

    out = []
    for f in flavours:
        name, default_uid = DASHBOARDS[f]
        d = json.loads((data_dir() / "dashboards" / name).read_text(encoding="utf-8"))
        if f in uids:
            d = with_datasource_uid(d, default_uid, uids[f])
        d.pop("id", None)  # a new dashboard on this server, or the one with the same uid (overwrite)
        out.append(d)
    return out


def read_token(token_file: Path | None, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    if token_file is not None:
        return read_secret_file(token_file, "--token-file")
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UserError(f"no Grafana token: pass --token-file FILE (a service account token on its first line) "
                        f"or set ${TOKEN_ENV}")
    remember_secret(token)
    return token


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--url {redact_url(url)!r}: not an http(s) URL — pass Grafana's root URL, "
                        "e.g. http://127.0.0.1:3000 (with its sub-path if it has one)")
    try:
        parts.port  # noqa: B018 (a bad port raises here, not deep inside the client)
    except ValueError:
        raise UserError(f"--url {redact_url(url)!r}: bad port — e.g. http://127.0.0.1:3000") from None
    return url.rstrip("/")


class Pusher:
    """One Grafana server, through grafana-client; every failure is a UserError."""

    def __init__(self, url: str, token: str) -> None:
        from grafana_client import GrafanaApi

        self.url = url
        self.api = GrafanaApi.from_url(url, credential=token, timeout=TIMEOUT_S)

    def _call(self, what: str, method: str, path: str, expect: type, **kwargs: Any) -> Any:
        """The JSON answer, which must be an `expect` (a dict or a list): anything else is not Grafana answering."""
        from grafana_client.client import GrafanaException, GrafanaTimeoutError

        where = f"{redact_url(self.url)}/api{path}"
        try:
            answer = getattr(self.api.client, method)(path, **kwargs)
            if not isinstance(answer, expect):
                raise ValueError(answer)
            return answer
        except GrafanaTimeoutError:
            raise UserError(f"Grafana at {redact_url(self.url)}: no answer within {TIMEOUT_S:g} s ({what}) — "
                            "check --url and that Grafana runs") from None
        except GrafanaException as e:
            raise UserError(_http_error(what, where, e.status_code, e.message)) from None
        except OSError as e:  # niquests' connection errors (refused, DNS, TLS) are OSErrors
            raise UserError(f"Grafana at {redact_url(self.url)}: not reachable ({_reason(e)}) — check --url "
                            "and that Grafana runs") from None
        except ValueError:  # a 200 that is not JSON: something else answers at this URL
            raise UserError(f"{where}: the answer is not Grafana's JSON — is --url Grafana's root URL "
                            "(with its sub-path if it has one)?") from None

    def health(self) -> None:
        self._call("health check", "GET", "/health", dict)

    def folder_uid(self, title: str) -> str:
        """The uid of the folder titled `title`, created when there is none."""
        folders = self._call("listing folders", "GET", "/folders", list, params={"limit": 1000})
        for f in folders:
            if isinstance(f, dict) and f.get("title") == title:
                return str(f["uid"])
        created = self._call(f"creating folder {title!r}", "POST", "/folders", dict, json={"title": title})
        return str(created["uid"])

    def push(self, dashboard: dict[str, Any], folder_uid: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"dashboard": dashboard, "overwrite": True, "message": "jouled grafana push"}
        if folder_uid:
            body["folderUid"] = folder_uid
        answer: dict[str, Any] = self._call(f"uploading dashboard {dashboard.get('uid')!r}", "POST", "/dashboards/db",
                                            dict, json=body)
        return answer


def _reason(e: BaseException) -> str:
    """The OS's words from a connection error (urllib3 wraps them in a paragraph of pool and object names)."""
    text = str(e)
    m = re.search(r"\[Errno [-\d]+\] [^'\")]+", text) or re.search(r"(Failed to resolve [^(]+)", text)
    if m:
        return m.group(0).strip()
    m = re.search(r"Caused by (\w+)", text)
    return m.group(1) if m else _first_line(e)[:160]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _http_error(what: str, where: str, status: int, message: str) -> str:
    detail = _first_line(Exception(message)) if message else ""
    fixes = {
        401: "the token is not valid — check --token-file / $JOULED_GRAFANA_TOKEN (a service account token)",
        403: "the token may not do this — give its service account the Editor role (or folder write permission)",
        404: "is --url Grafana's root URL (with its sub-path if it has one)? a --folder that was just deleted? "
             "push again",
    }
    fix = fixes.get(status, "see Grafana's log" if status >= 500 else "see the message")
    status_text = f"HTTP {status}" if status else "request failed"
    return f"{where} ({what}): {status_text} {detail} — {fix}".replace("  ", " ")


def push_dashboards(url: str, token: str, folder: str | None, uids: Mapping[str, str],
                    flavours: Sequence[str]) -> list[dict[str, Any]]:
    """Push the dashboards of `flavours`; the server's answer for each (uid, url, version, status)."""
    pusher = Pusher(url, token)
    pusher.health()
    folder_uid = pusher.folder_uid(folder) if folder else None
    return [pusher.push(d, folder_uid) for d in load_dashboards(flavours, uids)]


@grafana_app.command()
def push(
    url: Annotated[str, typer.Option("--url", metavar="URL", help="Grafana's root URL, e.g. http://127.0.0.1:3000")],
    token_file: Annotated[
        Path | None, typer.Option("--token-file", metavar="FILE",
                                  help=f"a file with a service account token on its first line (without it: the "
                                       f"token itself in ${TOKEN_ENV})")
    ] = None,
    folder: Annotated[
        str | None, typer.Option("--folder", metavar="NAME", help="put the dashboards in this folder (created if absent)")
    ] = None,
    datasource_uid: Annotated[
        list[str] | None, typer.Option(
            "--datasource-uid", metavar="FLAVOUR=UID",
            help="use an existing datasource: influxql=UID, flux=UID or promql=UID (repeat; default: the uids the "
                 "provisioning file creates, jouled-influxql, jouled-flux, jouled-prometheus)")
    ] = None,
    dashboard: Annotated[
        list[str] | None, typer.Option("--dashboard", metavar="FLAVOUR",
                                       help="only these: influxql | flux | promql (repeat; default: all three)")
    ] = None,
    config: ConfigOpt = None,
    store: UnusedStoreOpt = None,
) -> None:
    """Upload the dashboards (stable uids, overwrite: pushing again replaces them)."""
    from jouled.extras import require

    ignore_store(store, "jouled grafana push")
    flavours = list(dict.fromkeys(f.strip().lower() for f in dashboard)) if dashboard else list(FLAVOURS)
    bad = [f for f in flavours if f not in FLAVOURS]
    if bad:
        raise UserError(f"--dashboard {bad[0]!r}: unknown — use {', '.join(FLAVOURS)}")
    uids = parse_datasource_uids(datasource_uid or [])
    checked = check_url(url)
    token = read_token(token_file)
    require("jouled grafana push", "grafana", "grafana_client")
    for answer in push_dashboards(checked, token, folder, uids, flavours):
        where = answer.get("url", "")
        typer.echo(f"pushed {answer.get('uid')} (version {answer.get('version')}): {checked}{where}")
