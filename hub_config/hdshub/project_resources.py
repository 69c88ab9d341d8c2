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


def ensure_volumes(client: docker.APIClient, project: str) -> dict[str, str]:
    """{kind: volume name} for data, work and outputs, created if missing."""
    names = {}
    for kind in naming.VOLUME_KINDS:
        name = naming.volume_name(project, kind)
        try:
            client.inspect_volume(name)
        except docker.errors.NotFound:
            client.create_volume(
                name, labels={LABEL_PROJECT: project, LABEL_VOLUME_KIND: kind}
            )
        names[kind] = name
    return names


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
