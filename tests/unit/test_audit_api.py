"""How the hub attributes events: identity from the hub, never from the sender's body or headers."""

from types import SimpleNamespace

import pytest
from tornado.httputil import HTTPHeaders
from traitlets.config import Config

from hdshub import configurer
from hdshub.audit_api import AuditEventsHandler, attribute
from hdshub.audit_hub import client_ip, trusted_proxies
from hdshub.audit_log import AuditError, AuditTrail
from hdshub.kits import load_kits
from hdshub.settings import Settings
from hdshub.state import StateDir
from hdshub.tiers import load_tiers

SENT = {"time": "2026-03-10T09:00:00.000000Z", "action": "contents-read", "target": "work/a.csv",
        "outcome": "ok"}


def attributed(**sent):
    return attribute({**SENT, **sent}, "alice", "alice/cohorte-x", "172.31.0.5")


def test_the_hub_sets_server_and_address():
    event = attributed(details={"client_ip": "203.0.113.7", "server": "bob/other", "sha256": "ab" * 32})
    assert event["user"] == "alice"
    assert event["source_ip"] == "203.0.113.7"
    assert event["details"] == {"sha256": "ab" * 32, "server": "alice/cohorte-x", "server_ip": "172.31.0.5",
                                "sent_time": SENT["time"]}


def test_the_time_is_the_hubs_the_senders_is_kept_aside():
    event = attributed(time="2020-01-01T00:00:00.000000Z")
    assert event["time"][:4] != "2020" and event["time"] > SENT["time"]
    assert event["details"]["sent_time"] == "2020-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("user, expected", [
    ("carol", "carol"),           # a collaborator using the server: kept
    ("Carol@evil", "alice"),      # not a username: the owner
    ("carol\n", "alice"),
    (None, "alice"),
    ("-", "-"),                   # nobody logged in (a refused request): never the owner
])
def test_the_user_is_a_username_or_the_owner(user, expected):
    assert attributed(user=user)["user"] == expected


@pytest.mark.parametrize("field", ["project", "source_ip", "seq", "hash"])
def test_fields_the_hub_sets_are_refused(field):
    with pytest.raises(AuditError, match="set by the hub"):
        attributed(**{field: "x"})


@pytest.mark.parametrize("action", ["login", "server-start", "format-disk"])
def test_a_server_sends_only_its_own_kinds_of_event(action):
    with pytest.raises(AuditError, match="not accepted from a server"):
        attributed(action=action)


def test_user_input_is_made_one_line_and_cut_never_refused(tmp_path):
    event = attributed(target="work/a\nb.csv" + "x" * 5000,
                       details={"client_ip": "<script>", "new_path": "y" * 20000, "code": "a\nb"})
    assert "\n" not in event["target"] and len(event["target"]) == 1024
    assert event["source_ip"] == ""
    assert event["details"]["client_ip_invalid"] == "<script>"
    assert len(event["details"]["new_path"]) == 8192
    assert event["details"]["code"] == "a\nb"  # escaped by JSON, kept as written
    AuditTrail(tmp_path).append("cohorte-x", event)  # and the store takes it


def request(peer: str, **headers):
    return SimpleNamespace(connection=SimpleNamespace(context=SimpleNamespace(address=(peer, 40000))),
                           headers=HTTPHeaders(headers))


def test_client_address_through_the_proxy_is_the_entry_it_appended():
    trusted = trusted_proxies("172.30.0.1")
    forged = {"X-Real-Ip": "198.51.100.1", "X-Forwarded-For": "198.51.100.2, 203.0.113.9"}
    assert client_ip(request("127.0.0.1", **forged), trusted) == "203.0.113.9"
    assert client_ip(request("::ffff:172.30.0.1", **{"X-Forwarded-For": "203.0.113.9"}), trusted) == "203.0.113.9"


def test_client_address_of_anyone_else_is_the_socket_peer():
    trusted = trusted_proxies("172.30.0.1")
    assert client_ip(request("172.31.0.5", **{"X-Forwarded-For": "127.0.0.1"}), trusted) == "172.31.0.5"


def test_configuration_wires_the_trail(tmp_path):
    state = StateDir(tmp_path).ensure()
    settings = Settings(state=state, tiers=load_tiers(), kits=load_kits(), hub_ip="172.30.0.1",
                        hub_port=8081, proxy_api_port=8001, public_url="https://127.0.0.1:8000",
                        admin_user="admin")
    c = Config()
    configurer.apply(c, settings)
    route = next(h for h in c.JupyterHub.extra_handlers if h[0] == "/api/hdshub/audit/events")
    assert route == ("/api/hdshub/audit/events", AuditEventsHandler, {"audit_dir": str(state.audit_dir)})
    assert callable(c.Authenticator.post_auth_hook)
    assert callable(c.Spawner.pre_spawn_hook) and callable(c.Spawner.post_stop_hook)
    assert callable(c.JupyterHub.tornado_settings["log_function"])
