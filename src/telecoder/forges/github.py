"""GitHub: credentials for git, and the session's one pull request through the REST API.

``publish`` runs again after a crash and for every follow-up, so it first looks for the pull
requests of the branch (``GET /repos/{o}/{r}/pulls?head={o}:{branch}&state=all``), then:

- one is open: update its title and body (its base is left alone: a human may have retargeted it);
- the newest is closed, not merged: reopen it with the new title and body, so the conversation
  stays in one place; if GitHub will not reopen it (the branch was deleted, force-pushed or
  recreated while it was closed), open a new one;
- the newest is merged: a merged pull request cannot be reopened, so open a new one for the work
  pushed since; if GitHub finds no commits between base and branch, the merged one is the answer;
- there is none: open one. If GitHub answers 422 (another attempt opened it in the meantime),
  look again and update the open one it finds.

So a branch never has two open pull requests from us. Transport errors, 5xx and rate limits are
retried a few times with a short backoff, honouring ``Retry-After`` and ``X-RateLimit-Reset`` up
to ``max_wait`` seconds; anything else ends in a ``ForgeError`` whose ``transient`` says whether a
later attempt may succeed. The token travels only in headers and in git's environment: never in
a URL, an argument list or an error message; and only over https (plain http to this machine's
loopback excepted: it never leaves the host) to the configured host and port — the API's, and
for git the web host beside it. A remote on another host or port, or on http://, gets no token.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import ipaddress
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from telecoder.errors import ForgeError
from telecoder.forges.github_app import GitHubApp
from telecoder.forges.remote import Remote, parse_remote
from telecoder.forges.remote import repo_slug as _repo_slug
from telecoder.protocols import Publication, Published
from telecoder.settings import Settings

if TYPE_CHECKING:
    import httpx  # imported where a request is made: most runs never talk to GitHub

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
NO_TOKEN = "GITHUB_TOKEN is not set: cannot open a pull request"
_HINTS = {
    401: "the token is invalid or expired (GITHUB_TOKEN / TELECODER_GITHUB_TOKEN)",
    404: "no such repository, or the token cannot see it",
}
_RATE_LIMIT_WAIT = 60.0  # GitHub: without a hint, wait at least a minute after a secondary limit


class GitHubAPIError(ForgeError):
    """GitHub refused the request."""

    def __init__(
        self, message: str, *, status: int, transient: bool, details: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, status=status, transient=transient)
        self.details = details  # the messages of GitHub's ``errors`` array

    def says(self, text: str) -> bool:
        return any(text.lower() in detail.lower() for detail in self.details)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Pull:
    number: int
    url: str
    head: str
    open: bool
    merged: bool

    @classmethod
    def parse(cls, data: Any) -> _Pull:
        try:
            number, url = data["number"], data["html_url"]
            head, state = data["head"]["ref"], data["state"]
        except (KeyError, TypeError):
            raise ForgeError("GitHub answered with something that is not a pull request") from None
        if not isinstance(number, int) or not isinstance(url, str) or not isinstance(head, str):
            raise ForgeError("GitHub answered with something that is not a pull request")
        # The list endpoint carries ``merged_at`` only; a single pull request also ``merged``.
        merged = bool(data.get("merged") or data.get("merged_at"))
        return cls(number=number, url=url, head=head, open=state == "open", merged=merged)

    def published(self) -> Published:
        return Published(url=self.url, number=self.number)


def web_host(api_url: str) -> str:
    """The host of git remotes served alongside ``api_url``.

    ``https://api.github.com`` → ``github.com``; Enterprise Server serves its API under the same
    host (``https://ghe.example.com/api/v3``); GHE.com under ``api.`` + the host.
    """
    host = urlsplit(api_url).hostname or ""
    return host.removeprefix("api.")


def secure(scheme: str, host: str | None) -> bool:
    """Whether a token may travel to ``scheme://host``: https, or http to a loopback address."""
    if scheme == "https":
        return True
    if scheme != "http" or not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(remote: Remote) -> int:
    return remote.port or (443 if remote.scheme == "https" else 80)


class GitHubForge:
    name = "github"

    def __init__(
        self,
        token: str | None = None,
        api_url: str = DEFAULT_API_URL,
        client: httpx.AsyncClient | None = None,
        hosts: tuple[str, ...] = ("github.com",),
        *,
        port: int | None = None,
        retries: int = 2,
        backoff: float = 0.5,
        max_wait: float = 10.0,
        timeout: float = 30.0,
        app: GitHubApp | None = None,
    ) -> None:
        self._token = token or None
        self.app = app  # a GitHub App: installation tokens instead of ``token``
        self.api_url = api_url.rstrip("/")
        self.hosts = tuple(host.lower() for host in hosts)
        self.port = port  # of git remotes that get the token; None: the scheme's own
        self._client = client  # injected: the caller owns and closes it
        self._retries = retries
        self._backoff = backoff
        self._max_wait = max_wait
        self._timeout = timeout

    @classmethod
    def from_settings(
        cls, settings: Settings, *, client: httpx.AsyncClient | None = None
    ) -> GitHubForge:
        token = settings.github_token.get_secret_value() if settings.github_token else None
        api_url = settings.github_api_url
        hosts = (web_host(api_url),)
        return cls(
            token=token,
            api_url=api_url,
            client=client,
            hosts=hosts,
            port=urlsplit(api_url).port,
            app=GitHubApp.from_settings(settings, client=client),
        )

    def __repr__(self) -> str:
        return f"GitHubForge(api_url={self.api_url!r}, hosts={self.hosts!r})"

    # --- the Forge protocol ----------------------------------------------------------------

    def handles(self, remote_url: str) -> bool:
        try:
            return parse_remote(remote_url).host in self.hosts
        except ForgeError:
            return False

    @staticmethod
    def repo_slug(remote_url: str) -> str:
        """``owner/name`` from any spelling of a remote, a local path to a bare repo included."""
        return _repo_slug(remote_url)

    def git_env(self, remote_url: str) -> Mapping[str, str]:
        """Environment that makes git send the token to this forge's host, and nowhere else.

        An ``http.<origin>/.extraheader`` set through ``GIT_CONFIG_*``: not in argv, where any
        process list would show it, and scoped to the remote's origin. ssh remotes use the
        operator's keys: nothing to add.
        """
        try:
            remote = parse_remote(remote_url)
        except ForgeError:
            return {}
        token = self._token
        if token is None and self.app is not None:
            try:
                token = self.app.cached(_repo_slug(remote_url))
            except ForgeError:
                token = None
        if token is None:
            return {}
        if remote.origin is None or remote.host not in self.hosts:
            return {}
        if not secure(remote.scheme, remote.host) or _port(remote) != (self.port or 443):
            return {}
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode("ascii")
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.{remote.origin}.extraheader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }

    def secrets(self, remote_url: str) -> tuple[str, ...]:
        """The token git is given for the remote (an App's installation token included): for
        the masker of the session that uses it."""
        token = self._token
        if token is None and self.app is not None and self.handles(remote_url):
            try:
                token = self.app.cached(_repo_slug(remote_url))
            except ForgeError:
                token = None
        return (token,) if token else ()

    async def ready(self, remote_url: str) -> None:
        """Have a token for the remote at hand before ``git_env`` is asked (a GitHub App's
        installation token is fetched here, then cached)."""
        if self._token is None and self.app is not None and self.handles(remote_url):
            await self.app.token_for_repo(self.repo_slug(remote_url))

    async def token_for(self, full_name: str) -> str:
        if self._token is not None:
            return self._token
        if self.app is not None:
            return await self.app.token_for_repo(full_name)
        raise ForgeError(NO_TOKEN)

    async def publish(self, publication: Publication) -> Published:
        slug = self.repo_slug(publication.remote_url)
        token = await self.token_for(slug)
        owner, name = slug.split("/")
        repo = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        async with self._api(token) as api:
            return await _Publisher(api, repo, owner, publication).run()

    async def label(
        self, remote_url: str, number: int, *, add: Sequence[str], remove: Sequence[str] = ()
    ) -> None:
        """Put ``add`` on pull request ``number`` and take ``remove`` off it (where it has
        them); a label GitHub does not know yet is created with the default colour."""
        slug = self.repo_slug(remote_url)
        repo = _repo_path(slug)
        async with self.api(slug) as api:
            if add:
                await api.call("POST", f"{repo}/issues/{number}/labels", json={"labels": [*add]})
            for name in remove:
                path = f"{repo}/issues/{number}/labels/{quote(name, safe='')}"
                try:
                    await api.call("DELETE", path)
                except GitHubAPIError as error:
                    if error.status != 404:  # it did not have it
                        raise

    async def merge(self, remote_url: str, number: int, *, sha: str | None = None) -> str | None:
        """Merge pull request ``number`` (only while its head is ``sha``): None when merged,
        else GitHub's reason it cannot be (not mergeable, a draft, the head moved: 405, 409)."""
        slug = self.repo_slug(remote_url)
        body = {"sha": sha} if sha else {}
        async with self.api(slug) as api:
            try:
                await api.call("PUT", f"{_repo_path(slug)}/pulls/{number}/merge", json=body)
            except GitHubAPIError as error:
                if error.status in (405, 409, 422):
                    return error.message
                raise
        return None

    @asynccontextmanager
    async def api(self, full_name: str) -> AsyncIterator[_Api]:
        """The REST API for the repository ``owner/name`` (with this forge's token, or the
        App's installation token for it), retries and error translation."""
        async with self._api(await self.token_for(full_name)) as api:
            yield api

    # --- HTTP ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _api(self, token: str) -> AsyncIterator[_Api]:
        api = urlsplit(self.api_url)
        if not secure(api.scheme, api.hostname):
            raise ForgeError(
                f"the GitHub API URL {self.api_url} is not https: the token is not sent over it"
            )
        if self._client is not None:
            yield self._make_api(self._client, token)
            return
        import httpx

        timeout = httpx.Timeout(self._timeout, connect=min(self._timeout, 10.0))
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            yield self._make_api(client, token)

    def _make_api(self, client: httpx.AsyncClient, token: str) -> _Api:
        return _Api(
            client,
            self.api_url,
            token,
            retries=self._retries,
            backoff=self._backoff,
            max_wait=self._max_wait,
        )


class _Publisher:
    """One ``publish``: find, then update, reopen or create (see the module docstring)."""

    def __init__(self, api: _Api, repo: str, owner: str, publication: Publication) -> None:
        self._api = api
        self._repo = repo
        self._owner = owner
        self._pub = publication

    async def run(self) -> Published:
        pulls = await self._find()
        if (current := _first_open(pulls)) is not None:
            return await self._update(current)
        newest = pulls[0] if pulls else None
        if newest is None:
            return await self._create(merged=None)
        if newest.merged:
            return await self._create(merged=newest)
        return await self._reopen(newest) or await self._create(merged=None)

    async def _find(self) -> list[_Pull]:
        params = {
            "head": f"{self._owner}:{self._pub.branch}",
            "state": "all",
            "sort": "created",
            "direction": "desc",
            "per_page": "100",
        }
        data = await self._api.call("GET", f"{self._repo}/pulls", params=params)
        if not isinstance(data, list):
            raise ForgeError("GitHub answered the list of pull requests with something else")
        pulls = [_Pull.parse(item) for item in data]
        # Only the branch's own, whatever the filter let through.
        mine = [pull for pull in pulls if pull.head == self._pub.branch]
        return sorted(mine, key=lambda pull: pull.number, reverse=True)

    async def _update(self, pull: _Pull) -> Published:
        body = {"title": self._pub.title, "body": self._pub.body}
        data = await self._api.call("PATCH", f"{self._repo}/pulls/{pull.number}", json=body)
        return _Pull.parse(data).published()

    async def _reopen(self, pull: _Pull) -> Published | None:
        body = {"title": self._pub.title, "body": self._pub.body, "state": "open"}
        try:
            data = await self._api.call("PATCH", f"{self._repo}/pulls/{pull.number}", json=body)
        except GitHubAPIError as error:
            if error.status == 422:  # cannot be reopened: a new one it is
                return None
            raise
        return _Pull.parse(data).published()

    async def _create(self, *, merged: _Pull | None) -> Published:
        body = {
            "title": self._pub.title,
            "head": self._pub.branch,
            "base": self._pub.base,
            "body": self._pub.body,
            "maintainer_can_modify": True,
        }
        if self._pub.draft:
            body["draft"] = True  # a partial result: what the agent did before it was stopped
        try:
            data = await self._api.call("POST", f"{self._repo}/pulls", json=body)
        except GitHubAPIError as error:
            if error.status != 422:
                raise
            # Most often "A pull request already exists": another attempt, or our own POST whose
            # answer was lost and then retried. Whatever the reason, an open one is the answer.
            if (current := _first_open(await self._find())) is not None:
                return await self._update(current)
            if merged is not None and error.says("No commits between"):
                return merged.published()
            raise
        return _Pull.parse(data).published()


def _repo_path(slug: str) -> str:
    owner, name = slug.split("/")
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def _first_open(pulls: list[_Pull]) -> _Pull | None:
    return next((pull for pull in pulls if pull.open), None)


class _Api:
    """JSON over HTTP to GitHub with its headers, retries and error translation."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base: str,
        token: str,
        *,
        retries: int,
        backoff: float,
        max_wait: float,
    ) -> None:
        self._client = client
        self._base = base
        self._token = token
        self._retries = retries
        self._backoff = backoff
        self._max_wait = max_wait
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "telecoder",
        }

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, object] | None = None,
    ) -> Any:
        attempt = 0
        while True:
            last = attempt >= self._retries
            try:
                response = await self._client.request(
                    method, self._base + path, params=params, json=json, headers=self._headers
                )
            except _httpx().TransportError as exc:
                if last:
                    reason = str(exc) or type(exc).__name__
                    raise ForgeError(
                        self._clean(f"GitHub {method} {path} failed: {reason}"), transient=True
                    ) from exc
                await asyncio.sleep(self._backoff * 2**attempt)
                attempt += 1
                continue
            if response.is_success:
                return _json(response, method, path)
            error = self._error(method, path, response)
            wait = self._wait(response, attempt) if error.transient and not last else None
            if wait is None:
                raise error
            await asyncio.sleep(wait)
            attempt += 1

    async def text(self, path: str) -> str:
        """A plain-text resource, such as a job's log (GitHub redirects to where it is; the
        token is not sent to another host)."""
        try:
            response = await self._client.get(
                self._base + path, headers=self._headers, follow_redirects=True
            )
        except _httpx().TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ForgeError(self._clean(f"GitHub GET {path} failed: {reason}")) from exc
        if not response.is_success:
            raise self._error("GET", path, response)
        return response.text

    def _wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None when it is not worth waiting here."""
        wait = _server_wait(response)
        if wait is None:
            limited = response.status_code in (403, 429)
            wait = _RATE_LIMIT_WAIT if limited else self._backoff * 2**attempt
        return wait if wait <= self._max_wait else None

    def _error(self, method: str, path: str, response: httpx.Response) -> GitHubAPIError:
        status = response.status_code
        message, details = _explain(response)
        text = f"GitHub {method} {path} answered {status}: {message}"
        if details:
            text += f" ({'; '.join(details)})"
        if status in _HINTS:
            text += f" — {_HINTS[status]}"
        limited = status in (403, 429) and (
            _server_wait(response) is not None or "rate limit" in message.lower()
        )
        transient = status >= 500 or status in (408, 429) or limited
        details = tuple(self._clean(detail) for detail in details)
        text = self._clean(text)
        return GitHubAPIError(text, status=status, transient=transient, details=details)

    def _clean(self, text: str) -> str:
        return text.replace(self._token, "***")


GitHubApi = _Api  # the public name of the API client


def _json(response: httpx.Response, method: str, path: str) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ForgeError(
            f"GitHub {method} {path} answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
        ) from None


def _explain(response: httpx.Response) -> tuple[str, tuple[str, ...]]:
    """GitHub's ``message`` and the messages of its ``errors``, or a short piece of the body."""
    try:
        data = response.json()
    except ValueError:
        return (response.text.strip()[:200] or response.reason_phrase), ()
    if not isinstance(data, dict):
        return response.reason_phrase, ()
    message = data.get("message")
    details: list[str] = []
    for item in data.get("errors") or ():
        if isinstance(item, str):
            details.append(item)
        elif isinstance(item, dict):
            text = item.get("message") or " ".join(
                str(item[key]) for key in ("field", "code") if item.get(key)
            )
            details.append(str(text))
    return (str(message) if message else response.reason_phrase), tuple(details)


def _server_wait(response: httpx.Response) -> float | None:
    """How long GitHub asks us to wait: ``Retry-After``, or until the rate limit resets."""
    headers = response.headers
    if (value := headers.get("retry-after")) is not None:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    if headers.get("x-ratelimit-remaining") == "0":
        reset = headers.get("x-ratelimit-reset", "")
        if reset.isdigit():
            return max(0.0, int(reset) - time.time())
    return None


def _httpx() -> Any:
    import httpx

    return httpx
