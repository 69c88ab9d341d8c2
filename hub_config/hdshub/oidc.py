"""Login through an OpenID Connect provider: a hospital's identity provider or Pro Santé Connect.

Why this module exists: OAuthenticator's GenericOAuthenticator does the OAuth 2.0 dance (PKCE
included) but, in 17.4, has no discovery, never checks the id token's signature, issuer,
audience or authentication level, and refreshes a user by calling the userinfo endpoint with
the access token it already holds, which many providers answer from the attributes frozen
at login. A health-data hub needs the opposite on each point, so:

- `load_oidc_settings` reads $HDSHUB_CONFIG_DIR/auth.yaml (over a preset), validates it
  against defaults/auth.schema.yaml, reads the client secret file, and fetches the provider's
  discovery document at start-up (`discover`): a mistake stops the hub with the key at fault;
- `update_auth` only sets traitlets on `c` (the rest of configurer.py's manner);
- `HdsOIDCAuthenticator` verifies every id token against the provider's keys, refuses a
  login below the required authentication level (acr/amr) with a message in French and
  English, maps the provider's groups to project roles `<slug>:<role>` and hub admin, and
  refreshes through the refresh-token grant so that a group removed at the provider is
  removed from the hub at the next refresh.

The username is an immutable claim (`sub`, or the national identifier for Pro Santé
Connect), never an e-mail address. auth_state (tokens) is encrypted with the key in the
JUPYTERHUB_CRYPT_KEY environment variable of the hub process.
"""

from __future__ import annotations

import ipaddress
import json
import stat
from dataclasses import dataclass, field, replace
from functools import reduce
from pathlib import Path
from urllib.parse import urlparse

import jwt
import requests
from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Bool, Dict, List, Set, Unicode
from traitlets.config import Config

from .auth import NoSystemUserLogin
from .naming import SLUG_PATTERN
from .projects import ROLES, roles_by_project
from .validation import DEFAULTS_DIR, ConfigError, load_schema, load_yaml, validate

AUTH_FILE = "auth.yaml"
PRESETS_DIR = DEFAULTS_DIR / "oidc-presets"
CRYPT_KEY_ENV = "JUPYTERHUB_CRYPT_KEY"
DISCOVERY_PATH = "/.well-known/openid-configuration"
# Id tokens signed with a shared secret (HS*) or not at all ("none") are refused: only the
# provider's private key can have signed a token the hub accepts.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
CLOCK_SKEW_SECONDS = 60

# Defaults of the optional keys of the `oidc` section (the schema says what each one means).
DEFAULTS = {
    "display_name": "OpenID Connect",
    "authorize_params": {},
    "required_acr": [],
    "required_amr": [],
    "refresh_age_seconds": 300,
    "tls": {},
}
GROUP_DEFAULTS = {
    "claim": "groups",
    "prefix": "hdshub:",
    "map": {},
    "allowed": [],
    "admin": [],
    "project_roles_allow_login": True,
}

NOT_ALLOWED_MESSAGE = (
    "Votre compte n'appartient à aucun groupe autorisé sur ce hub : demandez à votre "
    "administrateur de vous ajouter à un projet. / Your account is in no group allowed on "
    "this hub: ask your administrator to add you to a project."
)


# -- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRules:
    """How the provider's groups become hub groups (see auth.schema.yaml, `groups`)."""

    claim: str
    prefix: str
    mapping: dict[str, str]
    allowed: tuple[str, ...]
    admin: tuple[str, ...]
    project_roles_allow_login: bool


@dataclass(frozen=True)
class Provider:
    """What the provider's discovery document says, checked."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    id_token_algorithms: tuple[str, ...]


@dataclass(frozen=True)
class OIDCSettings:
    """auth.yaml's `oidc` section over its preset and the defaults, validated; `provider` is
    filled in by `discover`."""

    display_name: str
    issuer: str
    discovery_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...]
    authorize_params: dict[str, str]
    username_claim: str
    groups: GroupRules | None
    required_acr: tuple[str, ...]
    required_amr: tuple[str, ...]
    refresh_age_seconds: int
    http_request_kwargs: dict[str, str]
    provider: Provider | None = None


def load_oidc_settings(config_dir: Path | None, fetch_discovery: bool = True) -> OIDCSettings | None:
    """The site's OIDC login, validated, or None when the site uses local accounts."""
    if config_dir is None or not (config_dir / AUTH_FILE).exists():
        return None
    path = config_dir / AUTH_FILE
    document = load_yaml(path)
    settings = settings_from_document(document, str(path))
    return discover(settings) if fetch_discovery else settings


def settings_from_document(document: object, source: str) -> OIDCSettings:
    """Validate an auth.yaml document (over its preset) and turn it into settings."""
    if isinstance(document, dict) and isinstance(document.get("oidc"), dict):
        preset = document["oidc"].get("preset")
        if preset is not None:
            document = {**document, "oidc": _merge(_load_preset(preset, source), document["oidc"])}
    validate(document, load_schema("auth.schema.yaml"), source)
    raw = _merge(DEFAULTS, document["oidc"])
    _check_url(raw["issuer"], f"{source}: key 'oidc.issuer'")
    discovery_url = raw.get("discovery_url") or raw["issuer"].rstrip("/") + DISCOVERY_PATH
    _check_url(discovery_url, f"{source}: key 'oidc.discovery_url'")
    groups = None
    if "groups" in raw:
        g = _merge(GROUP_DEFAULTS, raw["groups"])
        groups = GroupRules(
            claim=g["claim"], prefix=g["prefix"], mapping=dict(g["map"]),
            allowed=tuple(g["allowed"]), admin=tuple(g["admin"]),
            project_roles_allow_login=g["project_roles_allow_login"],
        )
    return OIDCSettings(
        display_name=raw["display_name"],
        issuer=raw["issuer"],
        discovery_url=discovery_url,
        client_id=raw["client_id"],
        client_secret=_read_secret(raw.get("client_secret_file"), f"{source}: key 'oidc.client_secret_file'"),
        scopes=tuple(raw["scopes"]),
        authorize_params=dict(raw["authorize_params"]),
        username_claim=raw["username_claim"],
        groups=groups,
        required_acr=tuple(raw["required_acr"]),
        required_amr=tuple(raw["required_amr"]),
        refresh_age_seconds=raw["refresh_age_seconds"],
        http_request_kwargs=_tls_kwargs(raw["tls"], source),
    )


def discover(settings: OIDCSettings, timeout: float = 10) -> OIDCSettings:
    """Fetch and check the provider's discovery document; the settings with their provider."""
    where = f"identity provider discovery document {settings.discovery_url}"
    tls = settings.http_request_kwargs
    try:
        reply = requests.get(
            settings.discovery_url, timeout=timeout,
            verify=tls.get("ca_certs", True),
            cert=(tls["client_cert"], tls["client_key"]) if "client_cert" in tls else None,
        )
        reply.raise_for_status()
        metadata = reply.json()
    except (requests.RequestException, ValueError) as error:
        raise ConfigError(
            f"{where}: cannot be read ({error}). Expected: the provider reachable from the "
            "hub, and oidc.issuer / oidc.discovery_url in auth.yaml pointing at it"
        ) from None
    if not isinstance(metadata, dict):
        raise ConfigError(f"{where}: is not a JSON object. Expected: OpenID provider metadata")
    # OpenID Connect Discovery 1.0, section 4.3: the issuer must be exactly the one configured.
    if metadata.get("issuer") != settings.issuer:
        raise ConfigError(
            f"{where}: names the issuer {metadata.get('issuer')!r}, not {settings.issuer!r}. "
            "Expected: oidc.issuer in auth.yaml written exactly as the provider's issuer"
        )
    endpoints = {}
    for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        value = metadata.get(key)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: has no {key}. Expected: a provider offering it")
        _check_url(value, f"{where}: {key}")
        endpoints[key] = value
    offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = tuple(a for a in offered if a in ASYMMETRIC_ALGORITHMS)
    if not algorithms:
        raise ConfigError(
            f"{where}: signs id tokens with {', '.join(map(str, offered))} only. Expected: "
            f"an asymmetric algorithm ({', '.join(ASYMMETRIC_ALGORITHMS)}) for this client"
        )
    return replace(settings, provider=Provider(issuer=settings.issuer,
                                               id_token_algorithms=algorithms, **endpoints))


def _load_preset(name: object, source: str) -> dict:
    path = PRESETS_DIR / f"{name}.yaml"
    if not isinstance(name, str) or not path.exists():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"{source}: key 'oidc.preset': unknown preset {name!r}. "
                          f"Expected: one of {', '.join(known)}")
    preset = load_yaml(path)
    if not isinstance(preset, dict):
        raise ConfigError(f"{path}: is not a mapping of oidc keys")
    return preset


def _merge(base: dict, override: dict) -> dict:
    """`override` over `base`; nested mappings are merged, lists and values replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _check_url(url: str, where: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "https" or (parsed.scheme == "http" and _is_loopback(parsed.hostname)):
        return
    raise ConfigError(f"{where}: {url!r} is not https. Expected: an https URL (plain http "
                      "only for a provider on this machine's loopback interface)")


def _private_file(path: str, where: str) -> Path:
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except OSError as error:
        raise ConfigError(f"{where}: {path} cannot be read ({error.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{where}: {path} is readable by others (mode {stat.S_IMODE(mode):o}). "
                          f"Expected: mode 600, run: chmod 600 {path}")
    return file


def _read_secret(path: str | None, where: str) -> str:
    if path is None:
        return ""
    secret = _private_file(path, where).read_text(encoding="utf-8").strip()
    if not secret:
        raise ConfigError(f"{where}: {path} is empty. Expected: the client secret on one line")
    return secret


def _tls_kwargs(tls: dict, source: str) -> dict[str, str]:
    """tornado HTTPRequest arguments for the provider's TLS (files checked now)."""
    kwargs = {}
    if "ca_file" in tls:
        if not Path(tls["ca_file"]).is_file():
            raise ConfigError(f"{source}: key 'oidc.tls.ca_file': {tls['ca_file']} is not a file")
        kwargs["ca_certs"] = tls["ca_file"]
    if "client_cert_file" in tls:
        if not Path(tls["client_cert_file"]).is_file():
            raise ConfigError(f"{source}: key 'oidc.tls.client_cert_file': "
                              f"{tls['client_cert_file']} is not a file")
        _private_file(tls["client_key_file"], f"{source}: key 'oidc.tls.client_key_file'")
        kwargs["client_cert"] = tls["client_cert_file"]
        kwargs["client_key"] = tls["client_key_file"]
    return kwargs


# -- configuration ------------------------------------------------------------------------


def update_auth(c: Config, s: OIDCSettings, public_url: str) -> None:
    """Log in through the provider. Everything is set on HdsOIDCAuthenticator itself, so the
    Authenticator-wide values meant for local accounts (admin_users, allow_all) do not apply."""
    if s.provider is None:
        raise ValueError("OIDC settings without provider metadata: call discover() first")
    p = s.provider
    a = c.HdsOIDCAuthenticator
    c.JupyterHub.authenticator_class = "hdshub.oidc.HdsOIDCAuthenticator"
    a.login_service = s.display_name
    a.client_id = s.client_id
    a.client_secret = s.client_secret
    a.oauth_callback_url = public_url.rstrip("/") + "/hub/oauth_callback"
    a.authorize_url = p.authorization_endpoint
    a.token_url = p.token_endpoint
    a.userdata_url = p.userinfo_endpoint
    a.issuer = p.issuer
    a.jwks_uri = p.jwks_uri
    a.id_token_algorithms = list(p.id_token_algorithms)
    a.scope = list(s.scopes)
    a.extra_authorize_params = dict(s.authorize_params)
    a.enable_pkce = True
    a.basic_auth = False
    a.validate_server_cert = True
    a.http_request_kwargs = dict(s.http_request_kwargs)
    a.username_claim = s.username_claim
    a.required_acr = list(s.required_acr)
    a.required_amr = list(s.required_amr)
    # The identity provider decides who is an administrator (admin groups), never a username.
    a.admin_users = set()
    a.allow_all = False
    a.custom_403_message = NOT_ALLOWED_MESSAGE
    # Tokens (auth_state) are kept, encrypted, for the refreshes below.
    a.enable_auth_state = True
    a.auth_refresh_age = s.refresh_age_seconds
    a.refresh_pre_spawn = True
    # A user whose refresh fails (removed at the provider, token revoked) loses API access
    # too, not only the browser session.
    a.auth_refresh_strict = True
    if s.groups is None:
        # No groups at the provider: memberships live in the hub, and only accounts an
        # administrator created there may log in.
        a.manage_groups = False
        a.allow_existing_users = True
        a.groups_claim = ""
        return
    g = s.groups
    a.manage_groups = True
    a.allow_existing_users = False
    a.groups_claim = g.claim
    a.project_group_prefix = g.prefix
    a.group_map = dict(g.mapping)
    a.allowed_groups = set(g.allowed)
    # Admin groups hold the hdshub-operator role (configurer.update_services), not JupyterHub's
    # admin role, which would open every user's server.
    a.admin_groups = set()
    a.operator_groups = set(g.admin)
    a.project_roles_allow_login = g.project_roles_allow_login


# -- the authenticator --------------------------------------------------------------------


class LoginRefused(web.HTTPError):
    """A login refused for a reason the user can act on; the message says it in FR and EN."""

    def __init__(self, message: str):
        super().__init__(403, "%s", message)
        self.jupyterhub_message = message  # what JupyterHub's error page shows


def project_role_groups(idp_groups: object, prefix: str, mapping: dict[str, str],
                        kept: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Hub groups for the provider's groups: `<prefix><slug>:<role>` and mapped names become
    `<slug>:<role>`; names in `kept` (allowed and admin groups) are kept as they are; any
    other group is ignored."""
    if isinstance(idp_groups, str):
        idp_groups = [idp_groups]
    if not isinstance(idp_groups, (list, tuple, set)):
        return set()
    hub_groups = set()
    for name in idp_groups:
        if not isinstance(name, str):
            continue
        if name in mapping:
            hub_groups.add(mapping[name])
        elif prefix and name.startswith(prefix):
            slug, sep, role = name[len(prefix):].rpartition(":")
            if sep and role in ROLES and SLUG_PATTERN.fullmatch(slug) and "--" not in slug:
                hub_groups.add(f"{slug}:{role}")
        if name in kept:
            hub_groups.add(name)
    return hub_groups


class HdsOIDCAuthenticator(NoSystemUserLogin, GenericOAuthenticator):
    """GenericOAuthenticator with verified id tokens, a required authentication level,
    project-role groups and refreshes that ask the provider again."""

    issuer = Unicode(config=True, help="Issuer the id tokens must name (from discovery).")
    jwks_uri = Unicode(config=True, help="Where the provider publishes its signing keys.")
    id_token_algorithms = List(
        Unicode(), default_value=["RS256"], config=True,
        help="Signature algorithms accepted for id tokens (asymmetric ones only).",
    )
    required_acr = List(
        Unicode(), config=True,
        help="If not empty, the id token's acr claim must be one of these, else the login is refused.",
    )
    required_amr = List(
        Unicode(), config=True,
        help="The id token's amr claim must contain all of these, else the login is refused.",
    )
    groups_claim = Unicode(
        "groups", config=True,
        help="Userinfo claim holding the user's groups (dots reach into nested objects); "
             "empty when the provider has no groups.",
    )
    project_group_prefix = Unicode(
        "hdshub:", config=True,
        help="Provider groups `<prefix><slug>:<role>` become the hub group `<slug>:<role>`.",
    )
    group_map = Dict(
        value_trait=Unicode(), config=True,
        help="Provider group name -> hub group `<slug>:<role>`, for names without the prefix.",
    )
    project_roles_allow_login = Bool(
        True, config=True,
        help="Let a user holding at least one project role log in, even outside allowed_groups.",
    )
    operator_groups = Set(
        config=True,
        help="Provider groups of hub operators: kept as hub groups of the same name, which hold "
             "the hdshub-operator role (JupyterHub's admin role is never given: it opens every "
             "user's server). Their members may log in.",
    )

    _jwks: dict | None = None

    # -- id token -----------------------------------------------------------------------

    async def get_token_info(self, handler, params):
        """The token endpoint's answer, its id token verified and its level checked."""
        token_info = await super().get_token_info(handler, params)
        id_token = token_info.get("id_token")
        if not id_token:
            if params.get("grant_type") == "authorization_code":
                self.log.warning("The provider answered the authorization code without an id token")
                raise LoginRefused(
                    "Le fournisseur d'identité n'a pas envoyé de jeton d'identité (id token) : "
                    "connexion refusée. / The identity provider sent no id token: login refused."
                )
            return token_info  # a refresh may renew the access token only
        claims = await self.verified_id_token_claims(id_token)
        self.check_authentication_level(claims)
        return token_info

    async def verified_id_token_claims(self, id_token: str) -> dict:
        """Claims of an id token whose signature, issuer, audience and dates are valid."""
        try:
            header = jwt.get_unverified_header(id_token)
            algorithm = header.get("alg")
            if algorithm not in self.id_token_algorithms:
                raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")
            key = await self._signing_key(header.get("kid"))
            claims = jwt.decode(
                id_token, key=key, algorithms=[algorithm], audience=self.client_id,
                issuer=self.issuer, leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
            audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
            if len(audiences) > 1 and claims.get("azp") != self.client_id:
                raise jwt.InvalidAudienceError("several audiences and azp is not this client")
        except (jwt.PyJWTError, KeyError, ValueError) as error:
            self.log.warning("Id token refused: %s", error)
            raise LoginRefused(
                "La réponse du fournisseur d'identité n'a pas pu être vérifiée : connexion "
                "refusée. Réessayez, puis signalez-le à votre administrateur. / The identity "
                "provider's answer could not be verified: login refused. Try again, then tell "
                "your administrator."
            ) from None
        return claims

    async def _signing_key(self, kid: str | None):
        """The provider's public key for `kid`, fetching the key set again once if unknown
        (the provider rotated its keys)."""
        for refresh in (False, True):
            if self._jwks is None or refresh:
                self._jwks = await self.httpfetch(self.jwks_uri, label="fetching the provider's keys",
                                                  method="GET", validate_cert=self.validate_server_cert)
            keys = [k for k in jwt.PyJWKSet.from_dict(self._jwks).keys
                    if k.public_key_use in (None, "sig")]
            matching = [k for k in keys if kid is None or k.key_id == kid]
            if kid is None and len(matching) > 1:
                raise jwt.InvalidKeyError("id token without kid and several signing keys")
            if matching:
                return matching[0].key
        raise jwt.InvalidKeyError(f"no signing key {kid!r} at {self.jwks_uri}")

    def check_authentication_level(self, claims: dict) -> None:
        acr = claims.get("acr")
        if self.required_acr and acr not in self.required_acr:
            self.log.warning("Login refused: acr %r, required one of %s", acr, self.required_acr)
            raise LoginRefused(
                f"Niveau d'authentification insuffisant ({acr or 'aucun'}) : ce hub exige "
                f"{' ou '.join(self.required_acr)}. Reconnectez-vous avec une authentification "
                f"plus forte (par exemple à deux facteurs). / Authentication level too low "
                f"({acr or 'none'}): this hub requires {' or '.join(self.required_acr)}. Log in "
                f"again with a stronger authentication (for example two-factor)."
            )
        amr = claims.get("amr") or []
        missing = [m for m in self.required_amr if m not in amr]
        if missing:
            self.log.warning("Login refused: amr %r, missing %s", amr, missing)
            raise LoginRefused(
                f"Méthode d'authentification requise absente ({', '.join(missing)}) : "
                f"reconnectez-vous avec cette méthode. / Required authentication method missing "
                f"({', '.join(missing)}): log in again using it."
            )

    async def update_auth_model(self, auth_model):
        """The userinfo answer must be about the person the id token names (OpenID Connect
        Core 1.0, section 5.3.2)."""
        auth_state = auth_model["auth_state"]
        id_token = auth_state.get("id_token")
        user_info = auth_state.get(self.user_auth_state_key) or {}
        if id_token:
            # Verified moments ago by get_token_info; only its subject is read here.
            subject = jwt.decode(id_token, options={"verify_signature": False}).get("sub")
            if user_info.get("sub") != subject:
                self.log.warning("Userinfo sub %r differs from id token sub %r",
                                 user_info.get("sub"), subject)
                raise LoginRefused(
                    "Réponses incohérentes du fournisseur d'identité : connexion refusée. / "
                    "Inconsistent answers from the identity provider: login refused."
                )
        return auth_model

    # -- groups and who may log in -------------------------------------------------------

    async def get_user_groups(self, auth_state: dict) -> set[str]:
        if not self.groups_claim:
            return set()
        user_info = auth_state.get(self.user_auth_state_key) or {}
        idp_groups = reduce(lambda d, k: d.get(k) if isinstance(d, dict) else None,
                            self.groups_claim.split("."), user_info)
        kept = set(self.allowed_groups) | set(self.operator_groups)
        return project_role_groups(idp_groups or [], self.project_group_prefix,
                                   self.group_map, kept)

    async def check_allowed(self, username, auth_model):
        if await super().check_allowed(username, auth_model):
            return True
        if auth_model and self.manage_groups and set(auth_model.get("groups") or []) & self.operator_groups:
            return True
        return bool(
            auth_model and self.manage_groups and self.project_roles_allow_login
            and roles_by_project(auth_model.get("groups") or [])
        )

    # -- refresh ------------------------------------------------------------------------

    async def refresh_user(self, user, handler=None, **kwargs):
        """Ask the provider again through the refresh-token grant (a fresh view of the user's
        groups, and a check that the session still exists there); without a refresh token,
        ask the userinfo endpoint with the current access token. False: log in again."""
        auth_state = await user.get_auth_state()
        refresh_token = (auth_state or {}).get("refresh_token")
        try:
            if refresh_token:
                token_info = await self.get_token_info(
                    handler, self.build_refresh_token_request_params(refresh_token))
                if not token_info.get("refresh_token"):
                    token_info["refresh_token"] = refresh_token
                # OAuthenticator's own path from a token answer to an auth model (17.4).
                auth_model = await self._token_to_auth_model(token_info)
            else:
                auth_model = await super().refresh_user(user, handler, **kwargs)
        except (HTTPClientError, web.HTTPError, OSError, ValueError, json.JSONDecodeError) as error:
            self.log.info("Refresh of %s failed (%s): a new login is required", user.name, error)
            return self._login_required(handler)
        if auth_model is False:
            return self._login_required(handler)
        if not isinstance(auth_model, dict):
            return auth_model
        if auth_model["name"] != user.name:
            self.log.warning("Refresh of %s answered for %s: a new login is required",
                             user.name, auth_model["name"])
            return self._login_required(handler)
        if not await self.check_allowed(user.name, auth_model):
            self.log.info("%s is no longer allowed by the provider's groups: a new login is "
                          "required", user.name)
            return self._login_required(handler)
        return auth_model

    @staticmethod
    def _login_required(handler) -> bool:
        """False, for JupyterHub to require a new login. JupyterHub 6.1.1 then reads
        `handler._token_authenticated`, which it sets only on token-authenticated requests,
        and fails with AttributeError on a browser's request (the user is still logged out,
        with a traceback in the log): give such a request the False it means."""
        if handler is not None and not hasattr(handler, "_token_authenticated"):
            handler._token_authenticated = False
        return False
