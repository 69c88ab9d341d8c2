"""Safe names: project slugs, usernames and the Docker objects derived from them.

Nothing typed by a person reaches Docker raw. Slugs are validated (they are also
JupyterHub named-server names: 1-30 characters of [a-z0-9-]); usernames are escaped,
since identity providers choose them, and the escaping cannot collide.
"""

from __future__ import annotations

import hashlib
import re

SLUG_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?$")
# Local and OIDC usernames (sub, RPPS number) fit this; e-mail addresses do not on purpose.
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
#: The system user owning every project's dashboard server (dashboards.py): never a person.
DASHBOARD_OWNER = "dashboards"
VOLUME_KINDS = ("data", "work", "outputs", "dashboards")
_ESCAPE_SAFE = set("abcdefghijklmnopqrstuvwxyz0123456789")
_MAX_ESCAPED_USER = 40


class InvalidName(ValueError):
    """A name typed by a person cannot be used; the message says what form is expected."""


def validate_slug(slug: str) -> str:
    if not isinstance(slug, str) or not SLUG_PATTERN.fullmatch(slug) or "--" in slug:
        raise InvalidName(
            f"invalid project name {slug!r}: use 1-30 characters a-z, 0-9 and '-', starting "
            "with a letter, not ending with '-' (for example: cohorte-diabete-2026) / "
            f"nom de projet invalide {slug!r} : 1 à 30 caractères a-z, 0-9 et '-', "
            "commençant par une lettre"
        )
    return slug


def validate_username(username: str) -> str:
    if not isinstance(username, str) or not re.fullmatch(USERNAME_PATTERN, username):
        raise InvalidName(
            f"username {username!r} not accepted: 1-64 characters a-z, 0-9, '.', '_' and "
            "'-', starting with a letter or a digit / nom d'utilisateur refusé : 1 à 64 "
            "caractères a-z, 0-9, '.', '_' et '-'"
        )
    if username == DASHBOARD_OWNER or username.startswith(f"{DASHBOARD_OWNER}-"):
        raise InvalidName(
            f"username {username!r} is reserved: it owns the projects' dashboard servers; "
            f"choose another / le nom {username!r} est réservé aux serveurs de tableaux de bord"
        )
    return username


def escape_username(username: str) -> str:
    """Reversible-enough, collision-free escape of any username into [a-z0-9_].

    Every character outside [a-z0-9] becomes '_' + two hex digits per UTF-8 byte, so two
    different usernames never give the same result; long names are cut and suffixed with a
    hash of the whole name.
    """
    escaped = "".join(
        c if c in _ESCAPE_SAFE else "".join(f"_{b:02x}" for b in c.encode("utf-8"))
        for c in username
    )
    if len(escaped) > _MAX_ESCAPED_USER:
        digest = hashlib.sha256(username.encode("utf-8")).hexdigest()[:12]
        escaped = f"{escaped[:_MAX_ESCAPED_USER - 13]}_{digest}"
    return escaped


def container_name(project: str, username: str) -> str:
    """hds-<project>.<user>: '.' never occurs in a slug or an escaped username."""
    return f"hds-{validate_slug(project)}.{escape_username(username)}"


def volume_name(project: str, kind: str) -> str:
    if kind not in VOLUME_KINDS:
        raise ValueError(f"unknown volume kind {kind!r}, expected one of {VOLUME_KINDS}")
    return f"hds-{validate_slug(project)}-{kind}"


def network_name(project: str) -> str:
    return f"hds-{validate_slug(project)}"


def bridge_interface(project: str) -> str:
    """Host interface of the project network: 15 characters at most (Linux IFNAMSIZ).

    Every project bridge starts with 'hds-', which the host firewall matches as 'hds-+'.
    """
    return "hds-" + hashlib.sha256(validate_slug(project).encode()).hexdigest()[:10]
