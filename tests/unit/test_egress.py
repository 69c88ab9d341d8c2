"""The egress limits a site may set (egress.yaml): overlaid on the defaults, checked whole."""

import pytest

from hdshub.egress import load_egress
from hdshub.validation import ConfigError


def test_a_site_file_replaces_only_the_keys_it_names(tmp_path):
    site = tmp_path / "egress.yaml"
    site.write_text("uploads: {max_bytes: 1024}\n", encoding="utf-8")
    limits = load_egress(site)
    assert limits["uploads"]["max_bytes"] == 1024
    assert limits["uploads"]["allowed_extensions"] == load_egress()["uploads"]["allowed_extensions"]


def test_notebooks_that_could_be_saved_but_never_reopened_are_refused(tmp_path):
    site = tmp_path / "egress.yaml"
    site.write_text("notebooks: {max_bytes: 20971520}\ncontents: {max_read_bytes: 5242880}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_egress(site)
    message = str(refused.value)
    assert str(site) in message and "notebooks.max_bytes" in message and "contents.max_read_bytes" in message


def test_the_defaults_let_every_savable_notebook_be_reopened():
    limits = load_egress()
    assert limits["notebooks"]["max_bytes"] <= limits["contents"]["max_read_bytes"]
