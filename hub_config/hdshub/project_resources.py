"""Docker objects of a project: its volumes and its internal network.

Created on demand, idempotently, by the spawner and by data import; always under the safe
names of naming.py and labelled so that an operator (and the tests) can find them.
"""

from __future__ import annotations

import docker
import docker.errors

from . import naming

LABEL_PROJECT = "org.hdshub.project"
LABEL_VOLUME_KIND = "org.hdshub.volume"
# Runs no user code: only chown/chmod of new volumes and data import, never started by users.
UTILITY_IMAGE = "hdshub/base:latest"
# Who owns the top of each volume: data and published dashboards belong to root (read-only
# for everyone else), work and outputs to the notebook user, shared by all members.
VOLUME_OWNERSHIP = {"data": ("0:0", "0755"), "work": ("1000:1000", "0770"), "outputs": ("1000:1000", "0770"),
                    "dashboards": ("0:0", "0755")}


def ensure_volumes(client: docker.APIClient, project: str) -> dict[str, str]:
    """{kind: volume name} for data, work and outputs, created and owned right if missing.

    New volumes are created together and initialised by a one-off root container; if that
    fails they are removed again, so a project never has half-prepared volumes.
    """
    names = {kind: naming.volume_name(project, kind) for kind in naming.VOLUME_KINDS}
    created = []
    for kind, name in names.items():
        try:
            client.inspect_volume(name)
        except docker.errors.NotFound:
            client.create_volume(name, labels={LABEL_PROJECT: project, LABEL_VOLUME_KIND: kind})
            created.append(kind)
    if created:
        try:
            _initialise(client, {kind: names[kind] for kind in created})
        except Exception:
            for kind in created:
                client.remove_volume(names[kind], force=True)
            raise
    return names


def _initialise(client: docker.APIClient, volumes: dict[str, str]) -> None:
    script = " && ".join(
        f"chown {VOLUME_OWNERSHIP[kind][0]} /v/{kind} && chmod {VOLUME_OWNERSHIP[kind][1]} /v/{kind}"
        for kind in volumes
    )
    container = client.create_container(
        UTILITY_IMAGE, ["sh", "-c", script], user="0", network_disabled=True,
        labels={"org.hdshub.purpose": "volume-init"},
        host_config=client.create_host_config(
            binds={name: {"bind": f"/v/{kind}", "mode": "rw"} for kind, name in volumes.items()},
            network_mode="none", cap_drop=["ALL"], cap_add=["CHOWN", "FOWNER"],
            security_opt=["no-new-privileges:true"],
        ),
    )
    try:
        client.start(container)
        status = client.wait(container, timeout=60)["StatusCode"]
        if status != 0:
            logs = client.logs(container).decode(errors="replace")
            raise RuntimeError(f"initialising volumes {sorted(volumes.values())} failed: {logs}")
    finally:
        client.remove_container(container, force=True)


def ensure_network(client: docker.APIClient, project: str) -> str:
    """The project's internal network: no route out, no traffic between its containers.

    `internal` removes the route to anything outside the network; `enable_icc=false` stops
    one member's kernel from talking to another member's server. The host end of the bridge
    is named hds-<hash> so that the host firewall can refuse everything from it but the
    hub API (see firewall.py).
    """
    name = naming.network_name(project)
    try:
        client.inspect_network(name)
    except docker.errors.NotFound:
        client.create_network(
            name,
            driver="bridge",
            internal=True,
            check_duplicate=True,
            options={
                "com.docker.network.bridge.name": naming.bridge_interface(project),
                "com.docker.network.bridge.enable_icc": "false",
            },
            labels={LABEL_PROJECT: project},
        )
    return name
