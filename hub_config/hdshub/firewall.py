"""Host firewall for project networks: a kernel reaches the hub API and nothing on the host.

Docker's internal networks have no route out, but a container can still reach every port
the host listens on through its bridge's gateway address. All project bridges are named
hds-* (naming.bridge_interface), so one rule set covers every project, present and future:
replies to connections the host opened (the proxy talking to a server) pass, new
connections pass only to the hub API, everything else is rejected.
"""

from __future__ import annotations

import shutil
import subprocess

CHAIN = "HDSHUB-INPUT"
BRIDGES = "hds-+"


class FirewallError(RuntimeError):
    pass


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    binary = shutil.which("iptables")
    if binary is None:
        raise FirewallError(
            "iptables is missing: install it (apt-get install iptables); the hub refuses to "
            "start without the firewall that keeps kernels off the host"
        )
    result = subprocess.run([binary, "-w", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise FirewallError(
            f"iptables {' '.join(args)} failed: {result.stderr.strip()} "
            "(the firewall needs root: run 'hdshub up' as root, or apply "
            "ansible/roles/firewall on production hosts)"
        )
    return result


def apply_rules(hub_ip: str, hub_port: int) -> None:
    """Idempotently install the rules; allow the hub API at hub_ip:hub_port."""
    if _iptables("-n", "-L", CHAIN, check=False).returncode != 0:
        _iptables("-N", CHAIN)
        _iptables("-A", CHAIN, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
        _iptables("-A", CHAIN, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
        _iptables("-A", CHAIN, "-j", "REJECT", "--reject-with", "icmp-port-unreachable")
    hub_rule = ["-p", "tcp", "-d", hub_ip, "--dport", str(hub_port), "-j", "ACCEPT"]
    if _iptables("-C", CHAIN, *hub_rule, check=False).returncode != 0:
        _iptables("-I", CHAIN, "1", *hub_rule)
    jump = ["-i", BRIDGES, "-j", CHAIN]
    if _iptables("-C", "INPUT", *jump, check=False).returncode != 0:
        _iptables("-I", "INPUT", "1", *jump)
