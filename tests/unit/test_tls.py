"""hdshub.tls without a hub: the generated certificate, and a site's pair checked before use."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

from hdshub import tls


def test_generated_certificate_names_the_host_and_is_private(tmp_path):
    files = tls.self_signed(tmp_path / "tls", "127.0.0.1")
    assert files.generated
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.cert.parent.stat().st_mode) == 0o700
    assert tls.problems(files.cert, files.key, "127.0.0.1") == []
    assert tls.covers(tls.load_certificate(files.cert), "127.0.0.1")
    assert not tls.covers(tls.load_certificate(files.cert), "127.0.0.2")


def test_generated_certificate_is_kept_then_remade_for_another_host(tmp_path):
    first = tls.self_signed(tmp_path / "tls", "hub.example.fr").cert.read_bytes()
    assert tls.self_signed(tmp_path / "tls", "hub.example.fr").cert.read_bytes() == first
    again = tls.self_signed(tmp_path / "tls", "127.0.0.1")
    assert again.cert.read_bytes() != first and tls.problems(again.cert, again.key, "127.0.0.1") == []


def test_a_site_pair_is_checked_before_use(tmp_path):
    site = tls.self_signed(tmp_path / "site", "hub.example.fr")
    other = tls.self_signed(tmp_path / "other", "hub.example.fr")
    assert tls.site_certificate("hub.example.fr", site.cert, site.key).generated is False
    with pytest.raises(tls.TLSError, match="does not name 127.0.0.1"):
        tls.site_certificate("127.0.0.1", site.cert, site.key)
    with pytest.raises(tls.TLSError, match="is not the private key of"):
        tls.site_certificate("hub.example.fr", site.cert, other.key)
    with pytest.raises(tls.TLSError, match="go together"):
        tls.site_certificate("hub.example.fr", site.cert, None)
    site.key.chmod(0o644)
    with pytest.raises(tls.TLSError, match="chmod 600"):
        tls.site_certificate("hub.example.fr", site.cert, site.key)


def test_names_match_without_case_or_final_dot_and_wildcards_cover_one_label(tmp_path):
    named = tls.self_signed(tmp_path / "named", "hub.example.fr")
    assert tls.covers(tls.load_certificate(named.cert), "HUB.example.fr.")
    tls.generate_self_signed(tmp_path / "w.pem", tmp_path / "w.key", "*.example.fr")
    wildcard = tls.load_certificate(tmp_path / "w.pem")
    assert tls.covers(wildcard, "hub.example.fr")
    assert not tls.covers(wildcard, "a.hub.example.fr") and not tls.covers(wildcard, "example.fr")


@pytest.mark.parametrize("argv, message", [
    (["--bind-url", "http://127.0.0.1:8000"], "expected an https URL"),
    (["--tls-cert", "/nonexistent.pem"], "go together"),
])
def test_hdshub_up_refuses_plain_http_and_half_a_pair_before_making_anything(tmp_path, argv, message):
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "hdshub.cli", "--state-dir", str(state), "up", "--no-build", *argv],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not state.exists()
