"""Tiers are data validated by a schema; a bad value is named with its fix."""

import pytest
import yaml

from hdshub.tiers import DEFAULT_TIERS_FILE, load_tiers, parse_size
from hdshub.validation import ConfigError, load_schema

GOOD_TIER = {
    "title": {"fr": "CHU de test", "en": "Test hospital"},
    "price": {"on_quote": True},
    "limits": {"cpu": 4, "memory": "16G", "pids": 2048, "kernels": 6},
    "quotas": {"servers": 10, "storage": "50G", "idle_timeout": "90m", "max_age": "2d"},
}


def write_site(tmp_path, tiers):
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump({"tiers": tiers}))
    return path


def test_defaults_are_the_published_offer():
    tiers = load_tiers()
    raw = yaml.safe_load(DEFAULT_TIERS_FILE.read_text())["tiers"]
    assert tiers["public"].price_eur_ht_per_month == 150
    assert tiers["private"].price_eur_ht_per_month == 300
    for name, tier in tiers.items():
        assert tier.limits.memory_bytes == parse_size(raw[name]["limits"]["memory"])
        assert tier.limits.cpu == raw[name]["limits"]["cpu"]
        assert tier.limits.pids == raw[name]["limits"]["pids"]
    assert tiers["private"].limits.memory_bytes > tiers["public"].limits.memory_bytes


def _walk(schema, path="$"):
    if isinstance(schema, dict):
        if "type" in schema or "$ref" in schema:
            yield path, schema
        for key, value in schema.items():
            yield from _walk(value, f"{path}.{key}")


def test_every_schema_key_is_described():
    schema = load_schema("tiers.schema.yaml")
    for path, node in _walk(schema):
        if "$ref" in node:
            continue
        assert node.get("description"), f"no description at {path}"


def test_a_custom_tier_is_just_another_entry(tmp_path):
    tiers = load_tiers(write_site(tmp_path, {"chu-test": GOOD_TIER}))
    assert set(tiers) == {"public", "private", "chu-test"}
    assert tiers["chu-test"].price_eur_ht_per_month is None
    assert tiers["chu-test"].limits.memory_bytes == 16 * 1024**3


def test_a_site_replaces_a_default_tier_as_a_whole(tmp_path):
    tiers = load_tiers(write_site(tmp_path, {"public": {**GOOD_TIER, "price": {"eur_ht_per_month": 150}}}))
    assert tiers["public"].limits.cpu == 4


@pytest.mark.parametrize(
    "limits, key, expected",
    [
        ({"cpu": 1, "memory": "lots", "pids": 256, "kernels": 2}, "tiers.bad.limits.memory", "a size such as 512M or 4G"),
        ({"cpu": 0, "memory": "1G", "pids": 256, "kernels": 2}, "tiers.bad.limits.cpu", "a number from 0.1 to 64"),
        ({"cpu": 1, "memory": "1G", "pids": 5, "kernels": 2}, "tiers.bad.limits.pids", "an integer from 64 to 32768"),
        ({"cpu": 1, "memory": "1G", "pids": 256, "kernels": 2, "gpu": 1}, "tiers.bad.limits", "one of the keys cpu, kernels, memory, pids"),
        ({"cpu": 1, "memory": "100M", "pids": 256, "kernels": 2}, "tiers.bad.limits.memory", "at least 256M"),
        ({"cpu": 1, "memory": "1G", "pids": 256, "kernels": 0}, "tiers.bad.limits.kernels", "an integer from 1 to 64"),
    ],
)
def test_bad_values_name_the_key_and_the_expected_form(tmp_path, limits, key, expected):
    site = write_site(tmp_path, {"bad": {**GOOD_TIER, "limits": limits}})
    with pytest.raises(ConfigError) as error:
        load_tiers(site)
    message = str(error.value)
    assert str(site) in message
    assert f"key '{key}'" in message
    assert expected in message


def test_bad_tier_name_is_refused_with_the_rule(tmp_path):
    with pytest.raises(ConfigError, match="starting with a letter"):
        load_tiers(write_site(tmp_path, {"Gold_Tier": GOOD_TIER}))


def test_unreadable_or_invalid_yaml_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_tiers(tmp_path / "absent.yaml")
    bad = tmp_path / "tiers.yaml"
    bad.write_text("tiers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_tiers(bad)


@pytest.mark.parametrize(
    "quotas, key, expected",
    [
        ({"servers": 0, "storage": "1G", "idle_timeout": "1h", "max_age": "1d"}, "tiers.bad.quotas.servers", "an integer from 1 to 1000"),
        ({"servers": 2, "storage": "a lot", "idle_timeout": "1h", "max_age": "1d"}, "tiers.bad.quotas.storage", "a size such as 500M or 20G"),
        ({"servers": 2, "storage": "1G", "idle_timeout": "soon", "max_age": "1d"}, "tiers.bad.quotas.idle_timeout", "a duration such as 45m"),
        ({"servers": 2, "storage": "1G", "idle_timeout": "30s", "max_age": "1d"}, "tiers.bad.quotas.idle_timeout", "at least 60s"),
        ({"servers": 2, "storage": "1G", "idle_timeout": "1h"}, "tiers.bad.quotas", "max_age"),
    ],
)
def test_bad_quotas_name_the_key_and_the_expected_form(tmp_path, quotas, key, expected):
    site = write_site(tmp_path, {"bad": {**GOOD_TIER, "quotas": quotas}})
    with pytest.raises(ConfigError) as error:
        load_tiers(site)
    assert f"key '{key}'" in str(error.value) and expected in str(error.value), str(error.value)


def test_quotas_are_read_in_plain_units(tmp_path):
    tier = load_tiers(write_site(tmp_path, {"chu-test": GOOD_TIER}))["chu-test"]
    assert tier.quotas.storage_bytes == 50 * 1024**3
    assert (tier.quotas.idle_timeout_seconds, tier.quotas.max_age_seconds) == (5400, 172800)
    assert (tier.quotas.servers, tier.limits.kernels) == (10, 6)
