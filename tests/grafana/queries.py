"""What Grafana does to a dashboard's queries before it sends them: find every query, substitute the variables.

``targets(dashboard)`` lists every query a dashboard runs (panel targets, annotations, query variables);
``interpolate(query, flavour, values)`` replaces the template variables the way Grafana's InfluxDB and Prometheus
datasources do: ``$timeFilter``, ``$__interval``, ``$__rate_interval``, ``$__range``, and the dashboard's own
variables — a multi-value or "All" selection in a regex (``=~ /^$host$/``, ``=~"$host"``, ``${host:regex}``)
becomes ``(a|b)`` with each value regex-escaped, "All" becomes the variable's allValue (``.*``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ALL = object()  # the "All" selection


@dataclass(frozen=True)
class Target:
    where: str  # "panel 'title' A", "annotation 'name'", "variable 'host'"
    query: str
    kind: str  # panel | annotation | variable
    legend: str = ""
    instant: bool = False


def targets(dashboard: dict[str, Any]) -> list[Target]:
    out = []
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            text = t.get("query", t.get("expr"))
            out.append(Target(f"panel {p['title']!r} {t['refId']}", text, "panel",
                              t.get("alias", t.get("legendFormat", "")), bool(t.get("instant"))))
    for a in dashboard["annotations"]["list"]:
        text = a.get("expr") or a["target"]["query"]
        out.append(Target(f"annotation {a['name']!r}", text, "annotation"))
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            out.append(Target(f"variable {v['name']!r}", v["query"], "variable"))
    return out


def influx_regex_escape(value: str) -> str:
    """@grafana/data escapeRegex, which the InfluxDB datasource applies to each value in a regex."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", r"\\\g<0>", value)


def prom_regex_escape(value: str) -> str:
    """The Prometheus datasource's escaping of a value inside a PromQL regex string (backslashes doubled)."""
    return re.sub(r"[\\^$*+?.()|\[\]{}'\"]", lambda m: "\\\\" + m.group(0), value)


def _selection(value: object, flavour: str) -> str:
    if value is ALL:
        return ".*"
    escape = prom_regex_escape if flavour == "promql" else influx_regex_escape
    if isinstance(value, str):
        return escape(value)
    assert isinstance(value, Sequence)
    return "(" + "|".join(escape(v) for v in value) + ")"


def interpolate(query: str, flavour: str, values: Mapping[str, object], *, from_ms: int, to_ms: int,
                interval: str = "10s", rate_interval: str = "30s", range_: str = "600s") -> str:
    """``query`` as Grafana sends it with the dashboard variables set to ``values`` (a string, a list, or ALL)."""
    builtins = {
        "timeFilter": f"time >= {from_ms}ms and time <= {to_ms}ms",
        "__interval": interval,
        "__rate_interval": rate_interval,
        "__range": range_,
    }

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        if name not in values:
            raise KeyError(f"variable ${name} has no value in the test (query: {query})")
        return _selection(values[name], flavour)

    out = re.sub(r"\$\{(\w+)(?::regex)?\}|\$(\w+)", sub, query)
    assert not re.search(r"\$\w|\$\{", out), out
    return out


def influxql_aliases(query: str) -> list[str]:
    """The column names an InfluxQL query's outer SELECT gives (its `AS "name"` aliases)."""
    return re.findall(r'AS "(\w+)"', _without_subqueries(query))  # a subquery's aliases are not the panel's columns


def _without_subqueries(query: str) -> str:
    out, depth, i = [], 0, 0
    while i < len(query):
        if depth == 0 and query.startswith("(SELECT ", i):
            depth = 1
            i += 1
            continue
        if depth:
            depth += {"(": 1, ")": -1}.get(query[i], 0)
        else:
            out.append(query[i])
        i += 1
    return "".join(out)


def alias_tags(alias: str) -> list[str]:
    """The tags an InfluxQL alias names ($tag_device → device): the query must GROUP BY them."""
    return re.findall(r"\$tag_(\w+)", alias)


def legend_labels(legend: str) -> list[str]:
    """The labels a PromQL legendFormat names ({{device}} → device): the result must carry them."""
    return re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)
