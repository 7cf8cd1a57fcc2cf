"""The InfluxDB reader's pure parts: store URLs, InfluxQL and Flux texts (user values only ever in the parameters),
series metadata from tags, rows to markers."""

from __future__ import annotations

import pytest

from jouled.config import Config, InfluxConfig
from jouled.series import SeriesMeta
from jouled.store import influx_flux as flux
from jouled.store.influx import (
    Q_SAMPLES,
    InfluxStoreError,
    carbon_influxql,
    columns_to_arrays,
    marker_from_row,
    markers_influxql,
    meta_from_tags,
    parse_influx_url,
    quote_ident,
    series_from_first_points,
)
from jouled.store.sqlite import SeriesKey
from jouled.store.url import is_influx_url

NASTY = ["x'; DROP MEASUREMENT power; --", 'a"b', "a'b", "../../etc", "a\nb", "Ünïcødé-模型-🚀", "a\\b", "$run",
         'x" OR "1"="1', "params.run", "jouled_host", "r) => true or (r"]


def test_v1_urls() -> None:
    u = parse_influx_url("influx://127.0.0.1/jouled")
    assert (u.api, u.base_url, u.database, u.username, u.password) == ("v1", "http://127.0.0.1:8086", "jouled", "", None)
    u = parse_influx_url("influx://bob:p%40ss@[::1]:9999/my%20db?tls=true")
    assert (u.base_url, u.database, u.username, u.password) == ("https://[::1]:9999", "my db", "bob", "p@ss")
    assert "p%40ss" not in u.shown and "p@ss" not in u.shown and "bob" in u.shown
    assert is_influx_url("influx://h/db") and is_influx_url("INFLUX2://h?org=o") and not is_influx_url("sqlite:///x.db")


@pytest.mark.parametrize("url, needle", [
    ("influx://127.0.0.1:8086", "names no database"),
    ("influx://127.0.0.1:8086/", "names no database"),
    ("influx://127.0.0.1:8086/a/b", "no '/'"),
    ("influx:///db", "no host"),
    ("influx://h:notaport/db", "not a valid URL"),
    ("influx2://h:8086?bucket=b", "names no org"),
    ("influx2://h:8086?org=o&bucket=b&token=SECRET", "never goes on the command line"),
])
def test_bad_urls_are_one_line(url: str, needle: str) -> None:
    with pytest.raises(InfluxStoreError) as e:
        parse_influx_url(url, Config(influx=InfluxConfig(bucket="")))
    assert needle in e.value.message and "\n" not in e.value.message and "SECRET" not in e.value.message


def test_v2_urls_fall_back_to_config() -> None:
    u = parse_influx_url("influx2://h:8086?org=acme&bucket=energy")
    assert (u.api, u.base_url, u.org, u.bucket) == ("v2", "http://h:8086", "acme", "energy")
    u = parse_influx_url("influx2://h", Config(influx=InfluxConfig(org="o2", bucket="b2")))
    assert (u.org, u.bucket) == ("o2", "b2")


@pytest.mark.parametrize("value", NASTY)
def test_influxql_user_values_only_in_params(value: str) -> None:
    # the text does not depend on the value at all: it is only ever a bound parameter
    q, params = markers_influxql(value, value)
    assert q == markers_influxql("plain", "plain")[0] and params["run"] == value and params["host"] == value
    assert "$run" in q and "$host" in q
    q, params = carbon_influxql(value, 1, 2, forecast=True)
    assert q == carbon_influxql("plain", 1, 2, forecast=True)[0]
    assert params == {"forecast": "true", "t0": 1, "t1": 2, "zone": value}
    assert "$host" in Q_SAMPLES and "$t0" in Q_SAMPLES


def test_quote_ident() -> None:
    assert quote_ident("power") == '"power"'
    assert quote_ident('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.parametrize("value", NASTY)
def test_flux_user_values_only_in_params(value: str) -> None:
    def build(v: str) -> list[tuple[str, dict[str, object]]]:
        return [
            flux.samples_query(v, v, v, v, -5, 10),
            flux.markers_query(v, v, v),
            flux.carbon_query(v, v, 0, None, False),
            flux.series_query(v),
            flux.runs_query(v),
            flux.time_range_query(v, "max"),
        ]

    built = build(value)
    for (text, params), (plain, _p) in zip(built, build("plain"), strict=True):
        assert text == plain, text  # the value never reaches the text
        assert params["jouled_bucket"] == value
    text, params = built[0]
    assert params["jouled_host"] == params["jouled_source"] == params["jouled_device"] == value
    assert (params["jouled_start"], params["jouled_stop"]) == (-5, 11)  # range's stop is exclusive: the end is kept
    assert "r.host == jouled_host" in text and "time(v: jouled_start)" in text


def test_flux_empty_tag_is_absent_tag() -> None:
    text, params = flux.samples_query("b", "", "nvml", "gpu0", None, None)
    assert "not exists r.host" in text and "jouled_host" not in params
    assert params["jouled_start"] == 0 and params["jouled_stop"] == flux.INFLUX_MAX_NS
    assert flux.clamp_ns(-(2**63), 0) == flux.INFLUX_MIN_NS


def test_meta_from_tags() -> None:
    assert meta_from_tags("nvml", "gpu0", {}) is None
    m = meta_from_tags("nvml", "gpu0", {"role": "gpu", "kind": "measured", "scope": "device"})
    assert m is not None
    assert (m.role, m.kind, m.host_wide, m.comparison, m.power_period_s) == ("gpu", "measured", False, False, None)
    m = meta_from_tags("smi", "gpu0", {"role": "gpu"})
    assert m is not None and m.comparison  # nvidia-smi stays a second view of the GPU
    m = meta_from_tags("estimate", "cpu", {"role": "cpu-estimate", "kind": "estimated", "scope": "host"})
    assert m is not None and m.estimated and m.host_wide


def test_series_history_from_first_points() -> None:
    rows = [
        ({"host": "h", "source": "nvml", "device": "gpu0", "role": "gpu"}, 100),
        ({"host": "h", "source": "nvml", "device": "gpu0", "role": "other"}, 50),  # declared differently earlier
        ({"source": "csv", "device": "m"}, 7),  # no host tag, no role: undeclared
    ]
    hist = series_from_first_points(rows)
    assert [m.role for _t, m in hist[SeriesKey("h", "nvml", "gpu0")]] == ["other", "gpu"]
    assert [t for t, _m in hist[SeriesKey("h", "nvml", "gpu0")]] == [50, 100]
    assert hist[SeriesKey("", "csv", "m")] == []


def test_marker_from_row_and_arrays() -> None:
    m = marker_from_row({"host": "h", "run": "r", "scope": "epoch", "event": "start", "seq": "12", "epoch": 3,
                         "gpus": "gpu0 gpu1", "attrs": '{"a":1}', "arch": "x"}, 5)
    assert (m.seq, m.epoch, m.gpus, m.attrs, m.arch, m.phase, m.time_ns) == (12, 3, ("gpu0", "gpu1"), {"a": 1}, "x", None, 5)
    m = marker_from_row({"run": "r", "scope": "run", "event": "end", "attrs": "not json"}, 6)
    assert (m.seq, m.host, m.attrs, m.gpus) == (0, "", {"attrs": "not json"}, ())
    rows: list[list[object]] = [[1700000000000000001, None, 2], [1700000000000000003, 1.5, None]]
    t, p, e = columns_to_arrays(["time", "energy_j", "power_w"], rows)
    assert t.tolist() == [1700000000000000001, 1700000000000000003]  # exact ns: never through a float
    assert p[0] == 2.0 and p[1] != p[1] and e[0] != e[0] and e[1] == 1.5


def test_seriesmeta_default_comparison_kept_only_for_default_role() -> None:
    m = meta_from_tags("smi", "gpu0", {"role": "other"})
    assert isinstance(m, SeriesMeta) and not m.comparison


@pytest.mark.parametrize("value", NASTY)
def test_flux_params_become_literals_in_the_client_ast(value: str) -> None:
    """influxdb-client sends params as extern options of literals (`option jouled_host = …`), each a name the query
    uses: strings as StringLiteral, times as IntegerLiteral — the nearest this project can come to the server (no
    Flux server runs in its tests)."""
    client_base = pytest.importorskip("influxdb_client.client._base")
    _text, params = flux.samples_query("b", value, "nvml", "gpu0", -5, 10)
    ast = client_base._BaseQueryApi._build_flux_ast(params, None)
    got = {st.assignment.id.name: (type(st.assignment.init).__name__, st.assignment.init.value)
           for st in ast.body}
    assert got["jouled_host"] == ("StringLiteral", value)
    assert got["jouled_start"] == ("IntegerLiteral", "-5") and got["jouled_stop"] == ("IntegerLiteral", "11")
    text, _p = flux.samples_query("b", value, "nvml", "gpu0", -5, 10)
    for name in got:  # every option the client sends is one the query refers to, and nothing else is needed
        assert name in text
