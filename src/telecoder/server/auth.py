"""Who may use the server: bearer tokens, the dashboard's login cookie, CSRF and origin checks.

- Tokens come from ``TELECODER_API_TOKEN``: comma-separated ``name:token`` (or bare tokens,
  named ``token1``, ``token2``, …), each an ``admin`` of that name; only their SHA-256 digests
  are kept in memory. And from the database (``telecoder tokens create``): a token of a user,
  with the user's role (admin, member, viewer) or ``worker``; only digests are stored there too,
  and a revoked token or a disabled user is refused at once (see ``store.users``).
- No token (neither kind) and a loopback bind: the server is *open* (a warning at start),
  but it still refuses requests whose ``Host`` is not a loopback name (DNS rebinding) and
  unsafe requests from another origin (a web page posting to ``127.0.0.1``). No env token and
  any other bind: the server refuses to start (:class:`InsecureBind`).
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
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from starlette.requests import Request

from telecoder.errors import TeleCoderError
from telecoder.store.users import Holder, Users, digest_of

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
    """Who is asking: a token's name (a database token: its user's), or ``anonymous`` on an
    open server; the ``role`` they act with and the ``user`` whose sessions are theirs."""

    name: str
    via: Literal["bearer", "cookie", "open"]
    session: str = ""  # the login cookie, to bind CSRF tokens to
    role: str = "admin"  # admin, member, viewer or worker (see server.roles)
    user: str | None = None  # None: a worker token of no one
    token_id: int | None = None  # a database token's id
    worker_id: str | None = None  # a worker token's worker (the id its first sign-in named)
    key: bytes = field(default=b"", repr=False)  # signs its cookies and CSRF tokens

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
    if host in _warned:  # `serve` checks before the store opens, the app again: one warning
        return
    _warned.add(host)
    log.warning("no TELECODER_API_TOKEN: the server on %s is open to anyone on this machine", host)


DB_COOKIE = "~"  # a database token's cookie names its id: "~12" (no env token name has "~")
TOUCH_SECONDS = 60.0  # how often a token's last_used_at is written, at most
OPEN_CHECK_SECONDS = 2.0  # how long "the database has no token" is believed
_warned: set[str] = set()


class Guard:
    """Authenticates requests; issues and checks login cookies and CSRF tokens."""

    def __init__(self, tokens: Tokens, users: Users | None = None) -> None:
        self.tokens = tokens
        self.users = users
        self._open_key = secrets.token_bytes(32)  # signs CSRF tokens of an open server
        self._open = not tokens and users is None
        self._open_checked = 0.0
        self._touched: dict[int, float] = {}

    @property
    def open(self) -> bool:
        """Whether the server has no token at all (as last checked by :meth:`check_open`)."""
        return self._open

    async def check_open(self) -> bool:
        """No env token and no live database token: open. Checked every few seconds, so a
        token made with ``telecoder tokens create`` closes a running server."""
        if self.tokens or self.users is None:
            return self._open
        now = time.monotonic()
        if now - self._open_checked > OPEN_CHECK_SECONDS:
            self._open = not await self.users.has_tokens()
            self._open_checked = now
        return self._open

    # --- database tokens ---

    async def _holder(self, **where: object) -> Holder | None:
        if self.users is None:
            return None
        holder = await self.users.holder(**where)  # type: ignore[arg-type]
        if holder is not None:
            now = time.time()
            if now - self._touched.get(holder.token_id, 0.0) > TOUCH_SECONDS:
                self._touched[holder.token_id] = now
                await self.users.touch(holder.token_id, now)
        return holder

    @staticmethod
    def _of_holder(
        holder: Holder, via: Literal["bearer", "cookie"], session: str = ""
    ) -> Principal:
        return Principal(
            name=holder.name,
            via=via,
            session=session,
            role=holder.role,
            user=holder.user,
            key=bytes.fromhex(holder.digest),
            token_id=holder.token_id,
            worker_id=holder.worker_id,
        )

    def _env(self, name: str, via: Literal["bearer", "cookie"], session: str = "") -> Principal:
        return Principal(
            name=name, via=via, session=session, user=name, key=self.tokens.key(name) or b""
        )

    # --- cookies ---

    async def login(self, token: str, now: float | None = None) -> str | None:
        """A cookie value for ``token``, or None if it is not a valid token."""
        name = self.tokens.check(token)
        key = self.tokens.key(name) if name is not None else None
        if name is None:
            holder = await self._holder(digest=digest_of(token))
            if holder is None:
                return None
            name, key = f"{DB_COOKIE}{holder.token_id}", bytes.fromhex(holder.digest)
        expires = int((now or time.time()) + COOKIE_SECONDS)
        return f"{name}.{expires}.{_sign(key or b'', f'{name}.{expires}')}"

    async def read_cookie(self, value: str, now: float | None = None) -> Principal | None:
        parts = value.rsplit(".", 2)
        if len(parts) != 3:
            return None
        name, expires, signature = parts
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        holder = None
        if name.startswith(DB_COOKIE) and name[1:].isdigit():
            holder = await self._holder(token_id=int(name[1:]))
            key = bytes.fromhex(holder.digest) if holder is not None else None
        else:
            key = self.tokens.key(name)
        if key is None:
            return None
        if not hmac.compare_digest(signature, _sign(key, f"{name}.{expires}")):
            return None
        if holder is not None:
            return self._of_holder(holder, "cookie", value)
        return self._env(name, "cookie", value)

    # --- CSRF ---

    def csrf_token(self, principal: Principal) -> str:
        key = self._open_key if principal.via == "open" else principal.key
        message = f"csrf|{principal.name}|{principal.session}"
        return hmac.new(key or b"", message.encode(), hashlib.sha256).hexdigest()[:40]

    def check_csrf(self, principal: Principal, supplied: str | None) -> None:
        if principal.via == "bearer":
            return
        if not supplied or not hmac.compare_digest(supplied, self.csrf_token(principal)):
            raise AuthError(403, "missing or stale CSRF token: reload the page and try again")

    # --- requests ---

    async def screen(self, request: Request) -> None:
        """Checks that need no credentials: Host on an open server, origin of unsafe requests."""
        host = request.headers.get("host", "")
        if await self.check_open() and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            raise AuthError(403, f"this open server only answers to loopback hosts, not {host!r}")
        if request.method in SAFE_METHODS:
            return
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise AuthError(403, "cross-site request refused")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            raise AuthError(403, f"request from another origin ({origin}) refused")

    async def identify(self, request: Request) -> Principal | None:
        """The principal of a bearer token or a login cookie; None when neither is given.

        A bad bearer token is an error (401) rather than None, so a client learns it is wrong.
        An open server takes everyone as ``anonymous``, whatever they send.
        """
        if await self.check_open():
            return Principal(name="anonymous", via="open", user="anonymous")
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer":
                raise AuthError(401, "invalid API token")
            token = token.strip()
            name = self.tokens.check(token)
            if name is not None:
                return self._env(name, "bearer")
            holder = await self._holder(digest=digest_of(token))
            if holder is None:
                raise AuthError(401, "invalid API token")
            return self._of_holder(holder, "bearer")
        cookie = request.cookies.get(COOKIE)
        if cookie and (principal := await self.read_cookie(cookie)) is not None:
            return principal
        return None


def _sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
