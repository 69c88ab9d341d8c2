"""The gate: every HTTP request to the server is judged here before any handler runs.

It replaces the application's handler lookup, so no route, including routes added later
by other extensions, can be reached without passing it. It decides on the request line
only (method, path, query); what needs the request body or the file itself is judged again
by the contents manager (contents.py).
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

from jupyter_server.base.handlers import JupyterHandler

from . import messages
from .paths import PathJudge, spellings

#: Routes that hand a file to the browser as a download, a page or an export: refused for
#: every file. Results leave only through the airlock.
DOWNLOAD_ROUTES = ("files", "view", "nbconvert")
#: What a dashboard server serves: Voilà, the kernels its pages talk to, and what JupyterHub
#: needs to log a viewer in and to check the server is up.
DASHBOARD_ROUTES = ("voila", "oauth_callback", "logout", "static")
DASHBOARD_EXACT = ("", "api", "api/status")
#: A dashboard page talks to the kernel Voilà started for it; it may not start or list any.
DASHBOARD_KERNEL_CHANNELS = re.compile(r"api/kernels/[0-9a-f-]{36}/channels")
#: ... and reads that kernel's model first (Voilà's front end); no restart, interrupt or delete.
DASHBOARD_KERNEL_MODEL = re.compile(r"api/kernels/[0-9a-f-]{36}")


class Gate:
    def __init__(self, base_url: str, judge: PathJudge, mode: str):
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        self.judge = judge
        self.mode = mode

    def routes(self, path: str) -> list[str]:
        """Every spelling of the path under the server's base URL, normalised."""
        found = []
        for spelling in spellings(path):
            candidate = "/" + spelling
            if candidate + "/" == self.base_url:
                found.append("")
            elif candidate.startswith(self.base_url):
                found.append(candidate[len(self.base_url):])
        return found

    def route(self, path: str) -> str | None:
        """The path under the server's base URL (normalised, decoded once as tornado does),
        or None if outside it."""
        routes = self.routes(path)
        return routes[min(1, len(routes) - 1)] if routes else None

    def decide(self, method: str, path: str, query: str) -> messages.Refusal | None:
        """A refusal if any spelling of the request is refused (tornado decodes a path once,
        a handler may decode again: no spelling may reach what the plain one may not)."""
        for rest in self.routes(path):
            refusal = self._decide(method, rest, query)
            if refusal is not None:
                return refusal
        return None

    def _decide(self, method: str, rest: str, query: str) -> messages.Refusal | None:
        if self.mode == "dashboard":
            if rest in DASHBOARD_EXACT or DASHBOARD_KERNEL_CHANNELS.fullmatch(rest) or any(
                rest == prefix or rest.startswith(prefix + "/") for prefix in DASHBOARD_ROUTES
            ) or (method in ("GET", "HEAD") and DASHBOARD_KERNEL_MODEL.fullmatch(rest)):
                return None
            return messages.refusal("dashboard-only")
        head, _, target = rest.partition("/")
        if head in DOWNLOAD_ROUTES:
            if head == "files" and self.judge.is_raw(target):
                return messages.refusal("raw-data")
            return messages.refusal("download")
        if rest.startswith("api/contents/"):
            return self._contents(method, rest[len("api/contents/"):], query)
        return None

    def _contents(self, method: str, target: str, query: str) -> messages.Refusal | None:
        """Raw data through the contents API. Requests whose spelling cannot name raw data
        (the common case: no data/ prefix, no '..', no encoding) are left to the contents
        manager, which judges every read on the file it opens and every write, rename,
        copy and deletion on the resolved path (symlinks, copies): one path resolution per
        request instead of two or three, each costing a system call per path component."""
        if not self._may_name_raw_data(target):
            return None
        if method in ("GET", "HEAD"):
            wants_content = parse_qs(query).get("content", ["1"])[-1] != "0"
            if wants_content and self.judge.is_raw_file(target):
                return messages.refusal("raw-data")
            return None
        if self.judge.is_raw(target):
            return messages.refusal("write-raw-data")
        return None

    def _may_name_raw_data(self, target: str) -> bool:
        raw = self.judge.policy.raw_data_dir.casefold()
        return any(s.split("/", 1)[0].casefold() == raw for s in spellings(target)) or (
            ".." in target or "%" in target)


class RefusalHandler(JupyterHandler):
    """Answers a refused request: 403 with the reason, JSON for APIs, a page otherwise."""

    def initialize(self, refusal: messages.Refusal):
        self.refusal = refusal

    def check_xsrf_cookie(self):
        return  # nothing is done for the request; refusing it needs no XSRF check

    async def prepare(self):
        # Authenticate when possible, so the audit trail names who was refused; refuse anyway.
        try:
            await super().prepare()
        except Exception:
            pass

    def _refuse(self, *args, **kwargs):
        self.hdshub_refusal = self.refusal
        self.set_status(403)
        self.set_header("Cache-Control", "no-store")
        if "/api/" in self.request.path or self.request.path.rstrip("/").endswith("/api"):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({
                "message": self.refusal.text, "reason": self.refusal.reason,
                "message_fr": self.refusal.fr, "message_en": self.refusal.en,
            }))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_PAGE.format(fr=_escape(self.refusal.fr), en=_escape(self.refusal.en)))

    get = post = put = patch = delete = head = options = _refuse


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_PAGE = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Accès refusé / Access refused</title>
<style>body{{font-family:sans-serif;max-width:42rem;margin:4rem auto;line-height:1.5}}
h1{{font-size:1.3rem}}</style></head><body>
<h1>Accès refusé</h1><p lang="fr">{fr}</p>
<h1 lang="en">Access refused</h1><p lang="en">{en}</p>
</body></html>
"""


def install(web_app, gate: Gate) -> None:
    """Put the gate in front of the application's handler lookup."""
    lookup = web_app.find_handler

    def find_handler(request, **kwargs):
        refusal = gate.decide(request.method, request.path, request.query)
        if refusal is not None:
            return web_app.get_handler_delegate(request, RefusalHandler, {"refusal": refusal})
        return lookup(request, **kwargs)

    web_app.find_handler = find_handler
