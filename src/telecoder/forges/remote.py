"""Git remote URLs in all the spellings git accepts, read without touching the network.

``https://host/owner/name.git``, ``ssh://user@host:port/owner/name``, ``git://…``, ``file://…``,
the scp-like ``user@host:owner/name.git`` and plain local paths (``/srv/git/owner/name.git``).
A forge needs three things from one: the host (is it mine?), the origin (where may credentials
go?) and the last two path segments (which repository?).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from telecoder.errors import ForgeError

# git's rule: ``[user@]host:path`` is scp-like when a colon comes before any slash.
_SCP = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.*)$")
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")


def redact(url: str) -> str:
    """``url`` without the user and password an http(s) URL may carry, for messages."""
    return _USERINFO.sub(r"\g<scheme>***@", url)


@dataclass(frozen=True, slots=True, kw_only=True)
class Remote:
    scheme: str  # lower-case: https, http, ssh, git, file (local paths too), ...
    host: str | None  # lower-case; None for a repository on this machine
    port: int | None
    path: str

    @property
    def origin(self) -> str | None:
        """``scheme://host[:port]/`` for http(s), the prefix git's ``http.<url>.*`` matches."""
        if self.scheme not in ("http", "https") or self.host is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{host}{port}/"

    def slug(self) -> tuple[str, str]:
        """``(owner, name)``: the last two path segments, without a ``.git`` suffix."""
        segments = [part for part in self.path.split("/") if part]
        if len(segments) >= 2:
            owner, name = segments[-2], segments[-1].removesuffix(".git")
            if name and owner not in (".", "..") and name not in (".", ".."):
                return owner, name
        raise ValueError(self.path)


def parse_remote(url: str) -> Remote:
    """Read a remote URL; ForgeError if it cannot be one."""
    text = url.strip()
    if not text:
        raise ForgeError("the remote URL is empty")
    if "://" in text:
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            raise ForgeError(f"bad port in remote URL {redact(text)!r}") from None
        scheme = parts.scheme.lower()
        host = parts.hostname or None
        if host is None and scheme != "file":
            raise ForgeError(f"no host in remote URL {redact(text)!r}")
        return Remote(scheme=scheme, host=host, port=port, path=parts.path)
    match = _SCP.match(text)
    if match is not None:
        return Remote(scheme="ssh", host=match["host"].lower(), port=None, path=match["path"])
    return Remote(scheme="file", host=None, port=None, path=text)


def repo_slug(url: str) -> str:
    """``owner/name`` of the repository at ``url``; ForgeError if the URL does not name one."""
    try:
        owner, name = parse_remote(url).slug()
    except ValueError:
        raise ForgeError(
            f"cannot tell owner/name from remote URL {redact(url)!r}: "
            "expected it to end in …/OWNER/NAME or …/OWNER/NAME.git"
        ) from None
    return f"{owner}/{name}"


_SHORTHAND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")


def shorthand_url(repo: str, api_url: str) -> str | None:
    """``owner/name`` as the URL of that repository on the GitHub at ``api_url`` (git over
    https, or http for a loopback test server); None when ``repo`` is not that shorthand."""
    if not _SHORTHAND.match(repo) or repo.endswith((".", "/..")) or ".." in repo.split("/"):
        return None
    api = urlsplit(api_url)
    host = (api.hostname or "").removeprefix("api.")  # as forges.github.web_host
    if not host:
        return None
    netloc = f"{host}:{api.port}" if api.port else host
    name = repo.removesuffix(".git")
    return f"{api.scheme}://{netloc}/{name}.git"
