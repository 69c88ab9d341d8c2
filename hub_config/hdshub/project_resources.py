"""Docker objects of a project: its volumes and its internal network.

Created on demand, idempotently, by the spawner and by data import; always under the safe
names of naming.py and labelled so that an operator (and the tests) can find them.
"""

from __future__ import annotations

import ipaddress
import secrets
import threading

import docker
import docker.errors
import docker.types

from . import naming

LABEL_PROJECT = "org.hdshub.project"
LABEL_VOLUME_KIND = "org.hdshub.volume"
_NETWORKS_LOCK = threading.Lock()
#: On a project network made with its own subnet, where containers get addresses in advance.
LABEL_FIXED_ADDRESSES = "org.hdshub.fixed-addresses"
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

    The subnet is recorded as the network's own (Docker picks it from the engine's address
    pools, then the network is made again with it): only then does Docker let a container
    be given its address in advance, which its internal TLS certificate names (see
    free_address).
    """
    with _NETWORKS_LOCK:  # two servers of a project starting at once make one network
        return _ensure_network(client, project)


def _ensure_network(client: docker.APIClient, project: str) -> str:
    name = naming.network_name(project)
    try:
        network = client.inspect_network(name)
    except docker.errors.NotFound:
        network = None
    if network is not None and (network.get("Labels") or {}).get(LABEL_FIXED_ADDRESSES):
        return name
    if network is not None:  # made by an older hdshub: remade if nobody is on it
        if network.get("Containers"):
            raise RuntimeError(
                f"network {name} predates fixed addresses and has containers on it: stop the "
                f"servers of project {project}, then start them again")
        client.remove_network(name)
    for _attempt in range(3):
        _create_network(client, name, project, pool=None)
        pool = _ipv4_config(client.inspect_network(name))
        client.remove_network(name)
        try:
            _create_network(client, name, project, pool=pool)
            return name
        except docker.errors.APIError as error:  # another network took the subnet meanwhile
            if "overlap" not in str(error).lower():
                raise
    raise RuntimeError(f"no free subnet for network {name} in the Docker engine's address pools")


def _create_network(client: docker.APIClient, name: str, project: str, pool: dict | None) -> None:
    ipam = None
    if pool is not None:
        ipam = docker.types.IPAMConfig(pool_configs=[
            docker.types.IPAMPool(subnet=pool["Subnet"], gateway=pool.get("Gateway"))])
    client.create_network(
        name,
        driver="bridge",
        internal=True,
        check_duplicate=True,
        ipam=ipam,
        options={
            "com.docker.network.bridge.name": naming.bridge_interface(project),
            "com.docker.network.bridge.enable_icc": "false",
        },
        labels={LABEL_PROJECT: project, **({LABEL_FIXED_ADDRESSES: "1"} if pool else {})},
    )


def _ipv4_config(network: dict) -> dict | None:
    """The network's IPv4 subnet and gateway."""
    for config in (network.get("IPAM") or {}).get("Config") or []:
        if "." in config.get("Subnet", ""):
            return config
    return None


def free_address(client: docker.APIClient, network: str) -> str:
    """An address of the network that no container holds, drawn at random so that two
    servers starting at once are very unlikely to draw the same one (Docker would refuse
    the second)."""
    details = client.inspect_network(network)
    subnet = ipaddress.ip_network(_ipv4_config(details)["Subnet"])
    taken = {ipaddress.ip_interface(c["IPv4Address"]).ip
             for c in (details.get("Containers") or {}).values() if c.get("IPv4Address")}
    gateways = {ipaddress.ip_address(c["Gateway"]) for c in details["IPAM"]["Config"] if c.get("Gateway")}
    # The first hosts are left to Docker's gateway (the first address) and its habits.
    candidates = range(10, min(subnet.num_addresses - 1, 4096))
    for _ in range(64):
        address = subnet.network_address + secrets.choice(candidates)
        if address not in taken and address not in gateways:
            return str(address)
    raise RuntimeError(f"network {network} has no free address left")
