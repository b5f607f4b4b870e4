"""Who may use the server: bearer tokens, the dashboard's login cookie, CSRF and origin checks.

- Tokens come from ``TELECODER_API_TOKEN``: comma-separated ``name:token`` (or bare tokens,
  named ``token1``, ``token2``, …). Only their SHA-256 digests are kept in memory.
- No token and a loopback bind: the server is *open* (a warning at start), but it still
  refuses requests whose ``Host`` is not a loopback name (DNS rebinding) and unsafe requests
  from another origin (a web page posting to ``127.0.0.1``). No token and any other bind: the
  server refuses to start (:class:`InsecureBind`).
- The dashboard logs in with a token and gets an HTTP-only cookie ``name.expiry.signature``,
  signed with that token's digest: revoking the token ends its cookies. Every unsafe request
  the dashboard makes carries a CSRF token bound to the cookie (form field or header).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from starlette.requests import Request

from telecoder.errors import TeleCoderError

log = logging.getLogger(__name__)

COOKIE = "telecoder_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
COOKIE_SECONDS = 7 * 24 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class InsecureBind(TeleCoderError):
    """Refusing to listen on a non-loopback address without TELECODER_API_TOKEN."""


class AuthError(Exception):
    """Raised by the checks below; the server's handlers turn it into 401 or 403."""

    def __init__(self, status: Literal[401, 403], detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token's name, or ``anonymous`` on an open server."""

    name: str
    via: Literal["bearer", "cookie", "open"]
    session: str = ""  # the login cookie, to bind CSRF tokens to

    @property
    def rate_key(self) -> str:
        return self.name


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    """The configured API tokens, as SHA-256 digests by name."""

    def __init__(self, digests: dict[str, bytes]) -> None:
        self._by_name = digests

    @classmethod
    def parse(cls, spec: str | None) -> Tokens:
        digests: dict[str, bytes] = {}
        for i, part in enumerate((spec or "").split(","), start=1):
            part = part.strip()
            if not part:
                continue
            name, sep, token = part.partition(":")
            if not sep or not _NAME.match(name):
                name, token = f"token{i}", part
            if not token:
                raise TeleCoderError(f"API token {name!r} is empty")
            if name in digests:
                raise TeleCoderError(f"API token name {name!r} is used twice")
            if len(token) < 16:
                log.warning("API token %r is shorter than 16 characters", name)
            digests[name] = _digest(token)
        return cls(digests)

    def __bool__(self) -> bool:
        return bool(self._by_name)

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def check(self, token: str) -> str | None:
        """The name of ``token``, or None; compares every digest in constant time."""
        supplied = _digest(token)
        found = None
        for name, digest in self._by_name.items():
            if hmac.compare_digest(supplied, digest):
                found = name
        return found

    def key(self, name: str) -> bytes | None:
        return self._by_name.get(name)


def check_bind(tokens: Tokens, host: str) -> None:
    """Refuse an exposed server without a token; warn about an open loopback one."""
    if tokens:
        return
    if not is_loopback(host):
        raise InsecureBind(
            f"refusing to listen on {host} without an API token: set TELECODER_API_TOKEN, "
            "or bind to 127.0.0.1"
        )
    log.warning("no TELECODER_API_TOKEN: the server on %s is open to anyone on this machine", host)


class Guard:
    """Authenticates requests; issues and checks login cookies and CSRF tokens."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self._open_key = secrets.token_bytes(32)  # signs CSRF tokens of an open server

    @property
    def open(self) -> bool:
        return not self.tokens

    # --- cookies ---

    def login(self, token: str, now: float | None = None) -> str | None:
        """A cookie value for ``token``, or None if it is not a valid token."""
        name = self.tokens.check(token)
        if name is None:
            return None
        expires = int((now or time.time()) + COOKIE_SECONDS)
        return f"{name}.{expires}.{self._sign(name, f'{name}.{expires}')}"

    def _sign(self, name: str, message: str) -> str:
        key = self.tokens.key(name) or b""
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()

    def read_cookie(self, value: str, now: float | None = None) -> Principal | None:
        parts = value.rsplit(".", 2)
        if len(parts) != 3 or self.tokens.key(parts[0]) is None:
            return None
        name, expires, signature = parts
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        if not hmac.compare_digest(signature, self._sign(name, f"{name}.{expires}")):
            return None
        return Principal(name=name, via="cookie", session=value)

    # --- CSRF ---

    def csrf_token(self, principal: Principal) -> str:
        key = self._open_key if principal.via == "open" else self.tokens.key(principal.name)
        message = f"csrf|{principal.name}|{principal.session}"
        return hmac.new(key or b"", message.encode(), hashlib.sha256).hexdigest()[:40]

    def check_csrf(self, principal: Principal, supplied: str | None) -> None:
        if principal.via == "bearer":
            return
        if not supplied or not hmac.compare_digest(supplied, self.csrf_token(principal)):
            raise AuthError(403, "missing or stale CSRF token: reload the page and try again")

    # --- requests ---

    def screen(self, request: Request) -> None:
        """Checks that need no credentials: Host on an open server, origin of unsafe requests."""
        host = request.headers.get("host", "")
        if self.open and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            raise AuthError(403, f"this open server only answers to loopback hosts, not {host!r}")
        if request.method in SAFE_METHODS:
            return
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise AuthError(403, "cross-site request refused")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            raise AuthError(403, f"request from another origin ({origin}) refused")

    def identify(self, request: Request) -> Principal | None:
        """The principal of a bearer token or a login cookie; None when neither is given.

        A bad bearer token is an error (401) rather than None, so a client learns it is wrong.
        An open server takes everyone as ``anonymous``, whatever they send.
        """
        if self.open:
            return Principal(name="anonymous", via="open")
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            name = self.tokens.check(token.strip()) if scheme.lower() == "bearer" else None
            if name is None:
                raise AuthError(401, "invalid API token")
            return Principal(name=name, via="bearer")
        cookie = request.cookies.get(COOKIE)
        if cookie and (principal := self.read_cookie(cookie)) is not None:
            return principal
        return None
