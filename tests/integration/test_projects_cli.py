"""The hdshub CLI against a real hub: projects, members, and the one way data gets in."""

from __future__ import annotations

import hashlib

import pytest

from hdshub import demo, naming

pytestmark = pytest.mark.docker


def read_volume_file(docker_client, volume, name):
    """Content, owner and mode of a file in a volume, read by a throwaway container."""
    output = docker_client.containers.run(
        "hdshub/base:latest", ["sh", "-c", f"stat -c '%u %a' /v/{name} && cat /v/{name}"],
        volumes={volume: {"bind": "/v", "mode": "ro"}}, network_mode="none", remove=True,
        user="1000",
    )
    first, _, body = output.partition(b"\n")
    return first.decode(), body


def test_project_create_list_and_members(hub, new_project):
    slug = new_project({"alice": "analyst", "carla": "clinician"})
    group = hub.api.get_group(slug)
    assert group["properties"]["kind"] == "project"
    assert (group["properties"]["tier"], group["properties"]["kit"]) == ("public", "python-stats")
    assert "alice" in hub.api.get_group(f"{slug}:analyst")["users"]
    listing = hub.cli("project", "list").stdout
    assert slug in listing and "clinician" in listing and "carla" in listing


def test_refused_commands_change_nothing(hub, new_project):
    slug = new_project({})
    before = [g["name"] for g in hub.api.groups()]
    result = hub.cli("project", "create", slug, "--tier", "public", "--kit", "python-stats",
                     "--title", "again", check=False)
    assert result.returncode == 2 and "already exists" in result.stderr
    result = hub.cli("project", "add-member", slug, "nobody-here", "--role", "analyst", check=False)
    assert result.returncode == 2 and "no user named 'nobody-here'" in result.stderr
    result = hub.cli("project", "add-member", "it-missing", "alice", "--role", "analyst", check=False)
    assert result.returncode == 2 and "no project named 'it-missing'" in result.stderr
    assert [g["name"] for g in hub.api.groups()] == before


def test_data_import_records_sha256_and_lands_read_only(hub, new_project, docker_client, tmp_path):
    slug = new_project({"alice": "analyst"})
    data = demo.write_cohort(tmp_path / "cohort.csv", n=50, seed=7)
    expected = hashlib.sha256(data.read_bytes()).hexdigest()
    result = hub.cli("data", "import", slug, str(data))
    assert expected in result.stdout

    (dataset,) = hub.api.get_group(slug)["properties"]["datasets"]
    assert dataset["name"] == "cohort.csv" and dataset["sha256"] == expected
    assert dataset["size"] == data.stat().st_size
    owner_mode, body = read_volume_file(docker_client, naming.volume_name(slug, "data"), "cohort.csv")
    assert owner_mode == "0 444"
    assert hashlib.sha256(body).hexdigest() == expected

    again = hub.cli("data", "import", slug, str(data), check=False)
    assert again.returncode == 2 and "never replaced" in again.stderr
    bad = tmp_path / "bad name;rm.csv"
    bad.write_text("x\n")
    refused = hub.cli("data", "import", slug, str(bad), check=False)
    assert refused.returncode == 2 and "not accepted" in refused.stderr
    assert len(hub.api.get_group(slug)["properties"]["datasets"]) == 1


def test_demo_project_was_created_by_up(hub):
    if not hub.with_demo:
        pytest.skip("a developer's own demo project exists on this machine; CI always checks this")
    group = hub.api.get_group(demo.DEMO_SLUG)
    (dataset,) = group["properties"]["datasets"]
    assert dataset["name"] == demo.DEMO_FILE
    assert "admin" in hub.api.get_group(f"{demo.DEMO_SLUG}:analyst")["users"]
    assert hub.admin_password and len(hub.admin_password) >= 16
