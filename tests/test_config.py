"""The config checker (jouled/config.py, plain dataclasses): types, bounds, unknown keys, the environment's strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled.config import Config, ConfigError, load_config
from jouled.errors import UserError


def _load(tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> Config:
    p = tmp_path / "j.toml"
    p.write_text(toml)
    return load_config(p, env or {})


def test_defaults_and_file_values_with_toml_ints_as_floats(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "[sources.nvml]\nrate_hz = 100\ngpus = [0, 2]\n[mqtt]\nembedded_port = 1884\n")
    assert cfg.sources.nvml.rate_hz == 100.0 and isinstance(cfg.sources.nvml.rate_hz, float)
    assert cfg.sources.nvml.gpus == [0, 2] and cfg.mqtt.embedded_port == 1884
    assert cfg.sources.rapl.rate_hz == 10.0 and cfg.daemon.flush_interval_s == 2.0  # defaults
    assert cfg.sources.nvml.was_set("rate_hz") and not cfg.sources.nvml.was_set("counter_rate_hz")
    assert cfg.source_file == str(tmp_path / "j.toml")


def test_environment_strings_are_converted_and_win_over_the_file(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "[sources.nvml]\nrate_hz = 100\n", {
        "JOULED_SOURCES_NVML_RATE_HZ": "25", "JOULED_MQTT_TLS_INSECURE": "yes", "JOULED_SOURCES_NVML_GPUS": "1, 3",
        "JOULED_MQTT_EMBEDDED_PORT": "1999", "JOULED_INFLUX_API": "v2",
    })
    assert cfg.sources.nvml.rate_hz == 25.0 and cfg.mqtt.tls_insecure is True
    assert cfg.sources.nvml.gpus == [1, 3] and cfg.mqtt.embedded_port == 1999 and cfg.influx.api == "v2"


@pytest.mark.parametrize(("toml", "needle"), [
    ("[daemon]\nflush_interval_s = 0\n", "'daemon.flush_interval_s' = 0 is invalid: it should be greater than 0"),
    ("[sources.estimate]\nidle_fraction = 1.5\n", "it should be at most 1"),
    ("[mqtt]\nembedded_port = 70000\n", "it should be at most 65535"),
    ("[mqtt]\nembedded_port = 1.5\n", "it should be a whole number"),
    ("[sources.nvml]\nrate_hz = \"fast\"\n", "it should be a number"),
    ("[sources.nvml]\nrate_hz = inf\n", "it should be a finite number"),
    ("[sources.nvml]\nenabled = \"maybe\"\n", "it should be true or false"),
    ("[sources.visa]\nmodel = \"wt999\"\n", "it should be one of 'wt310'"),
    ("[mqtt]\nurl = 5\n", "it should be a string (in quotes)"),
    ("[sources.nvml]\ngpus = 0\n", "it should be a list"),
    ("daemon = 3\n", "it should be a table of keys"),
    ("[store]\npth = \"x\"\n", "unknown key 'store.pth'"),
    ("source_file = \"x\"\n", "unknown key 'source_file'"),  # internal, not a key a user sets
])
def test_bad_values_are_one_line_naming_the_key(tmp_path: Path, toml: str, needle: str) -> None:
    with pytest.raises(UserError) as e:
        _load(tmp_path, toml)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_bad_environment_value_names_the_environment(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        _load(tmp_path, "", {"JOULED_DAEMON_HEALTH_INTERVAL_S": "-2"})
    assert str(e.value).startswith("environment (JOULED_* variables): key 'daemon.health_interval_s' = '-2'")


def test_copies_are_independent_and_from_dict_checks() -> None:
    cfg = Config.from_dict({"carbon": {"zone": "DE"}})
    c = cfg.carbon.copy()
    c.zone = "FR"
    assert cfg.carbon.zone == "DE"
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"carbon": {"poll_interval_s": -1}})
    assert e.value.loc == ("carbon", "poll_interval_s")


def test_was_set_sees_the_file_and_code_that_sets_a_value() -> None:
    """What pydantic's model_fields_set told the VISA source (is energy_unit_j the user's, or the default?)."""
    from jouled.config import VisaConfig

    assert Config.from_dict({"sources": {"visa": {"energy_unit_j": 1.0}}}).sources.visa.was_set("energy_unit_j")
    assert VisaConfig(energy_unit_j=3.6e6).was_set("energy_unit_j")
    assert not VisaConfig().was_set("energy_unit_j")
