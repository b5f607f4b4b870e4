"""A GitHub App's credentials: a JWT signed with the App's private key, exchanged for an
installation token per installation.

The JWT (RS256; ``iss`` the App id, ``iat`` a minute in the past against clock drift, ``exp``
nine minutes ahead: GitHub takes at most ten) authenticates as the App itself, for two calls:
``GET /repos/{o}/{r}/installation`` (which installation covers a repository) and
``POST /app/installations/{id}/access_tokens`` (a token for it, valid an hour). Tokens are kept
until five minutes before they expire, then asked for again; concurrent callers share one
request. The private key and the tokens never appear in errors or logs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from telecoder.errors import ForgeError
from telecoder.settings import Settings

if TYPE_CHECKING:
    import httpx

MARGIN = 300.0  # a token is renewed this long before it expires
API_VERSION = "2022-11-28"


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires: float  # epoch seconds


class GitHubApp:
    """Installation tokens of one App (see the module docstring)."""

    def __init__(
        self,
        app_id: str,
        private_key: str,
        api_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        if "PRIVATE KEY" not in private_key:
            raise ForgeError("the GitHub App's private key is not a PEM key (BEGIN … PRIVATE KEY)")
        self.app_id = str(app_id)
        self._key = private_key
        self.api_url = api_url.rstrip("/")
        self._client = client
        self._timeout = timeout
        self._tokens: dict[int, _Token] = {}
        self._installations: dict[str, int] = {}  # owner/name (lower case) -> installation
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, client: httpx.AsyncClient | None = None
    ) -> GitHubApp | None:
        """The App the settings describe; None when they describe none."""
        if settings.github_app_id is None:
            return None
        key = settings.github_app_private_key
        if key is not None:
            pem = key.get_secret_value()
        elif settings.github_app_private_key_file is not None:
            try:
                pem = Path(settings.github_app_private_key_file).read_text()
            except OSError as e:
                raise ForgeError(
                    f"cannot read TELECODER_GITHUB_APP_PRIVATE_KEY_FILE "
                    f"({settings.github_app_private_key_file}): {e.strerror}"
                ) from None
        else:
            raise ForgeError(
                "TELECODER_GITHUB_APP_ID is set but neither TELECODER_GITHUB_APP_PRIVATE_KEY "
                "nor TELECODER_GITHUB_APP_PRIVATE_KEY_FILE"
            )
        pem = pem.replace("\\n", "\n")  # a key pasted into one line of an env file
        key_id = (settings.github_app_id, settings.github_api_url, pem)
        if client is not None:
            return cls(settings.github_app_id, pem, settings.github_api_url, client=client)
        # One per App in a process: every forge built from the settings shares its tokens.
        if key_id not in _APPS:
            _APPS[key_id] = cls(settings.github_app_id, pem, settings.github_api_url)
        return _APPS[key_id]

    def jwt(self, now: float | None = None) -> str:
        """The App's own credential, valid nine minutes."""
        import jwt

        issued = int(now if now is not None else time.time()) - 60
        claims = {"iat": issued, "exp": issued + 600, "iss": self.app_id}
        try:
            return jwt.encode(claims, self._key, algorithm="RS256")
        except (ValueError, TypeError) as e:
            raise ForgeError(f"the GitHub App's private key cannot sign: {e}") from None

    def cached(self, full_name: str) -> str | None:
        """A valid token for the repository's installation, if one is at hand (no request)."""
        installation = self._installations.get(full_name.lower())
        token = self._tokens.get(installation) if installation is not None else None
        if token is None or token.expires - MARGIN <= time.time():
            return None
        return token.value

    async def token_for_repo(self, full_name: str) -> str:
        """An installation token that can act on ``owner/name``."""
        installation = self._installations.get(full_name.lower())
        if installation is None:
            owner, _, name = full_name.partition("/")
            path = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}/installation"
            data = await self._call("GET", path)
            installation = data.get("id") if isinstance(data, dict) else None
            if not isinstance(installation, int):
                raise ForgeError(f"GitHub names no installation of the App for {full_name}")
            self._installations[full_name.lower()] = installation
        return await self.token(installation)

    def remember(self, full_name: str, installation: int) -> None:
        """A webhook said which installation covers the repository."""
        self._installations[full_name.lower()] = installation

    async def token(self, installation: int) -> str:
        """The installation's token: the cached one, or a new one when it nears its end."""
        async with self._lock:
            token = self._tokens.get(installation)
            if token is not None and token.expires - MARGIN > time.time():
                return token.value
            data = await self._call("POST", f"/app/installations/{installation}/access_tokens")
            value = data.get("token") if isinstance(data, dict) else None
            if not isinstance(value, str) or not value:
                raise ForgeError("GitHub answered the installation token request without a token")
            self._tokens[installation] = _Token(value, _expiry(data.get("expires_at")))
            return value

    async def _call(self, method: str, path: str) -> Any:
        import httpx

        headers = {
            "Authorization": f"Bearer {self.jwt()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "telecoder",
        }
        url = self.api_url + path
        try:
            if self._client is not None:
                response = await self._client.request(method, url, headers=headers)
            else:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.request(method, url, headers=headers)
        except httpx.TransportError as e:
            raise ForgeError(f"GitHub {method} {path} failed: {e}", transient=True) from None
        if not response.is_success:
            try:
                message = str(response.json().get("message") or response.reason_phrase)
            except ValueError:
                message = response.reason_phrase
            hint = " — check TELECODER_GITHUB_APP_ID and the App's private key"
            raise ForgeError(
                f"GitHub {method} {path} answered {response.status_code}: {message}"
                + (hint if response.status_code == 401 else ""),
                status=response.status_code,
                transient=response.status_code >= 500,
            )
        try:
            return response.json()
        except ValueError:
            raise ForgeError(
                f"GitHub {method} {path} answered with a body that is not JSON"
            ) from None


_APPS: dict[tuple[str, str, str], GitHubApp] = {}


def _expiry(value: Any) -> float:
    """``expires_at`` (ISO 8601) as epoch seconds; an hour from now when it is missing."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time() + 3600
