"""Internal TLS: hub, proxy and project servers authenticate each other with certificates.

JupyterHub's internal_ssl makes a CA per component and signs a certificate for each server
as it starts; traffic between the hub, the proxy and the servers is then encrypted and both
ends are checked, so a container on a project network cannot pose as the hub or a server.
This module places a server's files where its container reads them, and gives the hub's
own clients (CLI, probes) the certificate they present.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import requests

#: The notebook user of the images (containers.NOTEBOOK_UID): it must read its own key.
SERVER_UID = 1000


def stage(paths: dict[str, str], folder: Path, mount: str) -> dict[str, str]:
    """Copy a server's key, certificate and CA bundle into its own folder, readable by the
    server's user only; return the same keys with paths as the container sees them."""
    folder.parent.mkdir(mode=0o700, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    in_container = {}
    for key, source in paths.items():
        target = staging / Path(source).name
        shutil.copyfile(source, target)
        os.chmod(target, 0o600)
        os.chown(target, SERVER_UID, SERVER_UID)
        in_container[key] = f"{mount}/{target.name}"
    os.chown(staging, SERVER_UID, SERVER_UID)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)  # whole or absent: a server never starts with half its files
    return in_container


def make_private(certs_location: Path) -> None:
    """Owner-only modes on JupyterHub's internal certificate store. Its library (certipy)
    opens folders and certificates to everyone each time it writes; only the hub and the
    proxy, both root on the hub's host, read them."""
    for directory, _dirs, files in os.walk(certs_location):
        os.chmod(directory, 0o700)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o600)


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def client_session(certs_location: Path) -> requests.Session:
    """A session that reaches the hub API and the proxy API from the hub's host: it shows
    the hub's own certificate and trusts every internal CA (JupyterHub's hub-ca bundle)."""
    session = requests.Session()
    session.trust_env = False  # straight to the internal address, whatever HTTP_PROXY says
    folder = certs_location / "hub-internal"
    session.cert = (str(folder / "hub-internal.crt"), str(folder / "hub-internal.key"))
    session.verify = str(certs_location / "hub-ca_trust.crt")
    return session
