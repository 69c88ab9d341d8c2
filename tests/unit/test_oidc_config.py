"""OIDC login settings: auth.yaml over its preset -> validated settings -> traitlets; the id
token checks of HdsOIDCAuthenticator, with keys made here (no provider, no hub)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from traitlets.config import Config

from hdshub import configurer, oidc, projects
from hdshub.validation import ConfigError, load_schema, validate

ISSUER = "https://sso.chu.example/realms/hospital"
PUBLIC_URL = "https://hub.chu.example"
PROVIDER = oidc.Provider(
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/protocol/openid-connect/auth",
    token_endpoint=f"{ISSUER}/protocol/openid-connect/token",
    userinfo_endpoint=f"{ISSUER}/protocol/openid-connect/userinfo",
    jwks_uri=f"{ISSUER}/protocol/openid-connect/certs",
    id_token_algorithms=("RS256",),
)


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "client-secret"
    path.write_text("s3cret-from-the-idp\n")
    path.chmod(0o600)
    return path


def hospital(secret_file, **oidc_keys) -> dict:
    section = {
        "preset": "hospital",
        "issuer": ISSUER,
        "client_id": "hdshub",
        "client_secret_file": str(secret_file),
        "groups": {"allowed": ["hdshub-users"], "admin": ["hdshub-admins"]},
    }
    section.update(oidc_keys)
    return {"oidc": section}


def settings_for(document: dict) -> oidc.OIDCSettings:
    return replace(oidc.settings_from_document(document, "auth.yaml"), provider=PROVIDER)


def applied(settings: oidc.OIDCSettings) -> Config:
    c = Config()
    oidc.update_auth(c, settings, PUBLIC_URL)
    return c


# -- from auth.yaml to traitlets ----------------------------------------------------------


def test_hospital_preset_sets_the_authenticator(secret_file):
    c = applied(settings_for(hospital(secret_file)))
    a = c.HdsOIDCAuthenticator
    assert c.JupyterHub.authenticator_class == "hdshub.oidc.HdsOIDCAuthenticator"
    assert a.enable_pkce is True
    assert a.username_claim == "sub"
    assert a.client_secret == "s3cret-from-the-idp"
    assert a.oauth_callback_url == "https://hub.chu.example/hub/oauth_callback"
    assert (a.authorize_url, a.token_url, a.userdata_url) == (
        PROVIDER.authorization_endpoint, PROVIDER.token_endpoint, PROVIDER.userinfo_endpoint)
    assert a.issuer == ISSUER and a.jwks_uri == PROVIDER.jwks_uri
    assert a.scope == ["openid", "profile", "groups"]
    assert a.manage_groups is True
    assert a.groups_claim == "groups" and a.project_group_prefix == "hdshub:"
    assert a.allowed_groups == {"hdshub-users"}
    assert a.admin_groups == set() and a.operator_groups == {"hdshub-admins"}
    assert a.enable_auth_state is True
    assert a.auth_refresh_age == 300
    assert a.refresh_pre_spawn is True
    # Local-account values set on Authenticator must not leak into OIDC logins.
    assert a.admin_users == set() and a.allow_all is False
    assert "administrateur" in a.custom_403_message and "administrator" in a.custom_403_message


def test_local_account_settings_do_not_leak_into_oidc(secret_file):
    """Whatever order configurer applies them in, the local accounts' admin user and
    allow-all never apply to OIDC logins; the username pattern (no e-mail) does."""
    c = Config()
    configurer.update_auth(c, SimpleNamespace(admin_user="admin"))
    oidc.update_auth(c, settings_for(hospital(secret_file)), PUBLIC_URL)
    a = oidc.HdsOIDCAuthenticator(config=c)
    assert a.admin_users == set()
    assert a.allow_all is False
    assert a.validate_username("emp-0042")
    assert not a.validate_username("alice@chu.example")


def test_site_keys_replace_the_preset_and_nested_groups_merge(secret_file):
    document = hospital(secret_file, scopes=["openid", "groups", "offline_access"],
                        refresh_age_seconds=60, required_acr=["mfa"])
    document["oidc"]["groups"]["map"] = {"CN=DIM-Analystes": "cohorte-x:analyst"}
    s = settings_for(document)
    assert s.scopes == ("openid", "groups", "offline_access")
    assert s.groups.claim == "groups"  # from the preset
    assert s.groups.mapping == {"CN=DIM-Analystes": "cohorte-x:analyst"}
    a = applied(s).HdsOIDCAuthenticator
    assert a.auth_refresh_age == 60
    assert a.required_acr == ["mfa"]
    assert a.group_map == {"CN=DIM-Analystes": "cohorte-x:analyst"}


def test_pro_sante_connect_preset(secret_file):
    document = {"oidc": {"preset": "prosanteconnect", "client_id": "hdshub-psc",
                         "client_secret_file": str(secret_file)}}
    s = oidc.settings_from_document(document, "auth.yaml")
    assert s.username_claim == "SubjectNameID"
    assert s.scopes == ("openid", "scope_all")
    assert s.authorize_params == {"acr_values": "eidas1"}
    assert s.discovery_url.endswith("/.well-known/wallet-openid-configuration")
    assert s.groups is None
    a = applied(replace(s, provider=PROVIDER)).HdsOIDCAuthenticator
    # No groups at PSC: memberships live in the hub, only accounts created there log in.
    assert a.manage_groups is False
    assert a.allow_existing_users is True
    assert a.extra_authorize_params == {"acr_values": "eidas1"}
    assert a.login_service == "Pro Santé Connect"


def test_discovery_url_defaults_to_the_well_known_path(secret_file):
    s = oidc.settings_from_document(hospital(secret_file), "auth.yaml")
    assert s.discovery_url == f"{ISSUER}/.well-known/openid-configuration"


def test_secret_is_not_in_the_settings_repr(secret_file):
    assert "s3cret" not in repr(oidc.settings_from_document(hospital(secret_file), "auth.yaml"))


def test_no_auth_file_means_local_accounts(tmp_path):
    assert oidc.load_oidc_settings(None) is None
    assert oidc.load_oidc_settings(tmp_path) is None


def test_load_reads_the_site_file(tmp_path, secret_file):
    (tmp_path / "auth.yaml").write_text(yaml.safe_dump(hospital(secret_file)))
    s = oidc.load_oidc_settings(tmp_path, fetch_discovery=False)
    assert s.client_id == "hdshub" and s.provider is None


# -- mistakes stop the hub, naming the key ------------------------------------------------


@pytest.mark.parametrize("change, key, expected", [
    ({"username_claim": "email"}, "oidc.username_claim", "never an e-mail address"),
    ({"scopes": ["profile", "groups"]}, "oidc.scopes", "must include openid"),
    ({"refresh_age_seconds": 5}, "oidc.refresh_age_seconds", "from 10 to 3600"),
    ({"client_id": ""}, "oidc.client_id", "client id"),
    ({"issuer": "sso.chu.example"}, "oidc.issuer", "http(s) URL"),
    ({"authorize_params": {"redirect_uri": "https://evil.example"}}, "oidc.authorize_params",
     "other than the ones the hub sets"),
    ({"groups": {"map": {"DIM": "cohorte-x:boss"}}}, "oidc.groups.map.DIM", "<slug>:<role>"),
    ({"required_acr": "mfa"}, "oidc.required_acr", "acr"),
    ({"client_secret": "in-clear"}, "oidc", "one of the keys"),
    ({"preset": "keycloak"}, "oidc.preset", "one of hospital, prosanteconnect"),
])
def test_schema_errors_name_the_key(secret_file, change, key, expected):
    document = hospital(secret_file, **change)
    with pytest.raises(ConfigError) as error:
        oidc.settings_from_document(document, "auth.yaml")
    assert f"key '{key}'" in str(error.value)
    assert expected in str(error.value)


def test_missing_issuer_is_named(secret_file):
    document = hospital(secret_file)
    del document["oidc"]["issuer"]
    with pytest.raises(ConfigError, match="key 'oidc'.*'issuer' is a required property"):
        oidc.settings_from_document(document, "auth.yaml")


def test_plain_http_only_on_loopback(secret_file):
    with pytest.raises(ConfigError, match="key 'oidc.issuer'.*not https"):
        oidc.settings_from_document(hospital(secret_file, issuer="http://sso.chu.example"), "auth.yaml")
    s = oidc.settings_from_document(hospital(secret_file, issuer="http://127.0.0.1:8443"), "auth.yaml")
    assert s.issuer == "http://127.0.0.1:8443"


def test_secret_file_readable_by_others_is_refused(secret_file):
    secret_file.chmod(0o644)
    with pytest.raises(ConfigError, match="key 'oidc.client_secret_file'.*chmod 600"):
        oidc.settings_from_document(hospital(secret_file), "auth.yaml")


def test_missing_secret_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="key 'oidc.client_secret_file'.*cannot be read"):
        oidc.settings_from_document(hospital(tmp_path / "nope"), "auth.yaml")


def test_schema_and_code_agree():
    """The roles in the schema are the project model's, and the defaults are valid values."""
    schema = load_schema("auth.schema.yaml")
    pattern = schema["definitions"]["groups"]["properties"]["map"]["additionalProperties"]["pattern"]
    assert pattern.endswith(":(" + "|".join(projects.ROLES) + ")$")
    document = {"oidc": {**oidc.DEFAULTS, "issuer": ISSUER, "client_id": "x",
                         "scopes": ["openid"], "username_claim": "sub",
                         "groups": oidc.GROUP_DEFAULTS}}
    validate(document, schema, "defaults")
    for preset in oidc.PRESETS_DIR.glob("*.yaml"):
        described = set(schema["definitions"]["oidc"]["properties"])
        assert set(yaml.safe_load(preset.read_text())) <= described, preset


# -- discovery ----------------------------------------------------------------------------


@pytest.fixture
def metadata_server():
    """Serves one discovery document on 127.0.0.1, as a provider would at start-up."""
    served = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(served["document"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    issuer = f"http://127.0.0.1:{server.server_port}"

    def serve(**changes):
        served["document"] = {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "userinfo_endpoint": f"{issuer}/userinfo",
            "jwks_uri": f"{issuer}/jwks",
            "id_token_signing_alg_values_supported": ["none", "HS256", "RS256"],
            **changes,
        }
        return issuer

    yield serve
    server.shutdown()
    server.server_close()


def test_discovery_fills_the_endpoints(metadata_server, secret_file):
    issuer = metadata_server()
    s = oidc.discover(oidc.settings_from_document(hospital(secret_file, issuer=issuer), "auth.yaml"))
    assert s.provider.token_endpoint == f"{issuer}/token"
    assert s.provider.id_token_algorithms == ("RS256",)  # none and HS256 are never accepted


def test_discovery_refuses_another_issuer(metadata_server, secret_file):
    issuer = metadata_server(issuer="https://attacker.example")
    with pytest.raises(ConfigError, match="names the issuer 'https://attacker.example'"):
        oidc.discover(oidc.settings_from_document(hospital(secret_file, issuer=issuer), "auth.yaml"))


def test_discovery_refuses_symmetric_signatures_only(metadata_server, secret_file):
    issuer = metadata_server(id_token_signing_alg_values_supported=["HS256"])
    with pytest.raises(ConfigError, match="asymmetric algorithm"):
        oidc.discover(oidc.settings_from_document(hospital(secret_file, issuer=issuer), "auth.yaml"))


def test_unreachable_provider_stops_the_hub(secret_file):
    s = oidc.settings_from_document(hospital(secret_file, issuer="http://127.0.0.1:9"), "auth.yaml")
    with pytest.raises(ConfigError, match="cannot be read.*oidc.issuer"):
        oidc.discover(s, timeout=2)


# -- groups -------------------------------------------------------------------------------


def test_provider_groups_become_project_roles():
    groups = oidc.project_role_groups(
        ["hdshub:cohorte-a:analyst", "hdshub:cohorte-b:clinician", "hdshub:cohorte-a:boss",
         "hdshub:Bad_Slug:analyst", "hdshub:a--b:analyst", "CN=DIM", "hdshub-users", "staff", 42],
        prefix="hdshub:", mapping={"CN=DIM": "cohorte-c:checker"}, kept={"hdshub-users"},
    )
    assert groups == {"cohorte-a:analyst", "cohorte-b:clinician", "cohorte-c:checker", "hdshub-users"}
    assert oidc.project_role_groups("hdshub:x:steward", "hdshub:", {}) == {"x:steward"}
    assert oidc.project_role_groups(None, "hdshub:", {}) == set()


def authenticator(**traits) -> oidc.HdsOIDCAuthenticator:
    c = Config()
    oidc.update_auth(c, settings_for(hospital_document()), PUBLIC_URL)
    for name, value in traits.items():
        setattr(c.HdsOIDCAuthenticator, name, value)
    return oidc.HdsOIDCAuthenticator(config=c)


def hospital_document() -> dict:
    return {"oidc": {"preset": "hospital", "issuer": ISSUER, "client_id": "hdshub",
                     "groups": {"allowed": ["hdshub-users"], "admin": ["hdshub-admins"]}}}


def test_groups_and_admin_from_userinfo():
    a = authenticator()
    state = {"oauth_user": {"sub": "e1", "groups": ["hdshub:cohorte-a:analyst", "hdshub-admins", "x"]}}
    assert asyncio.run(a.get_user_groups(state)) == {"cohorte-a:analyst", "hdshub-admins"}


@pytest.mark.parametrize("groups, allowed", [
    (["cohorte-a:analyst"], True),        # a project role lets one in
    (["hdshub-users"], True),             # so does an allowed group
    (["unrelated"], False),               # nothing else does
    ([], False),
])
def test_who_may_log_in(groups, allowed):
    a = authenticator()
    model = {"name": "e1", "admin": None, "groups": groups, "auth_state": {}}
    assert asyncio.run(a.check_allowed("e1", model)) is allowed


def test_project_roles_alone_can_be_made_insufficient():
    a = authenticator(project_roles_allow_login=False)
    model = {"name": "e1", "admin": None, "groups": ["cohorte-a:analyst"], "auth_state": {}}
    assert asyncio.run(a.check_allowed("e1", model)) is False


# -- id tokens ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def id_token(key, **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "e1", "aud": "hdshub", "iat": now, "exp": now + 300,
               "acr": "loa-2", **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key,
                      algorithm="RS256", headers={"kid": "k1"})


def with_keys(a: oidc.HdsOIDCAuthenticator, key) -> oidc.HdsOIDCAuthenticator:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    a._jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig"}]}
    return a


def test_a_valid_id_token_is_accepted(signing_key):
    a = with_keys(authenticator(), signing_key)
    claims = asyncio.run(a.verified_id_token_claims(id_token(signing_key)))
    assert claims["sub"] == "e1"


@pytest.mark.parametrize("claims", [
    {"aud": "another-client"},
    {"iss": "https://attacker.example"},
    {"exp": int(time.time()) - 3600},
    {"sub": None},
])
def test_a_bad_id_token_is_refused(signing_key, claims):
    a = with_keys(authenticator(), signing_key)
    with pytest.raises(oidc.LoginRefused) as error:
        asyncio.run(a.verified_id_token_claims(id_token(signing_key, **claims)))
    assert "could not be verified" in error.value.jupyterhub_message


def test_an_id_token_signed_by_another_key_is_refused(signing_key):
    a = with_keys(authenticator(), signing_key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    a.httpfetch = _same_keys(a._jwks)  # the provider's key set, fetched again: still not it
    with pytest.raises(oidc.LoginRefused):
        asyncio.run(a.verified_id_token_claims(id_token(other)))


def test_an_hmac_id_token_is_refused(signing_key):
    a = with_keys(authenticator(), signing_key)
    forged = jwt.encode({"iss": ISSUER, "sub": "e1", "aud": "hdshub", "iat": 1, "exp": 2**31},
                        "client-secret-known-to-the-client", algorithm="HS256")
    with pytest.raises(oidc.LoginRefused):
        asyncio.run(a.verified_id_token_claims(forged))


def _same_keys(jwks):
    async def fetch(*args, **kwargs):
        return jwks
    return fetch


def test_required_acr_refuses_a_weaker_login_with_a_bilingual_message():
    a = authenticator(required_acr=["mfa", "loa-3"])
    with pytest.raises(oidc.LoginRefused) as error:
        a.check_authentication_level({"acr": "loa-2"})
    message = error.value.jupyterhub_message
    assert "Niveau d'authentification insuffisant (loa-2)" in message
    assert "Authentication level too low (loa-2): this hub requires mfa or loa-3" in message
    a.check_authentication_level({"acr": "loa-3"})


def test_required_amr_needs_every_method():
    a = authenticator(required_amr=["pwd", "otp"])
    with pytest.raises(oidc.LoginRefused, match="403"):
        a.check_authentication_level({"amr": ["pwd"]})
    a.check_authentication_level({"amr": ["pwd", "otp", "hwk"]})


def test_userinfo_about_someone_else_is_refused(signing_key):
    a = authenticator()
    model = {"name": "e1", "admin": None,
             "auth_state": {"id_token": id_token(signing_key, sub="e1"), "oauth_user": {"sub": "e2"}}}
    with pytest.raises(oidc.LoginRefused, match="403"):
        asyncio.run(a.update_auth_model(model))
