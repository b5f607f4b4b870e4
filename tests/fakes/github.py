"""A fake GitHub on 127.0.0.1: the REST endpoints TeleCoder uses, and git over smart HTTP.

REST (``Authorization: Bearer <token>``, else 401 ``Bad credentials``; unknown repository 404):

    GET   /repos/{o}/{r}/pulls                 head=o:branch, state=open|closed|all, base, paging
    POST  /repos/{o}/{r}/pulls                 422 when an open one exists for head+base, when head
                                               or base is missing or (with a git dir) not a branch,
                                               or when there are no commits between them
    GET   /repos/{o}/{r}/pulls/{n}
    GET   /repos/{o}/{r}/pulls/{n}/files           from the bare repository (base...head)
    PATCH /repos/{o}/{r}/pulls/{n}             title, body, base, state (reopen refused when merged,
                                               or when the branch was deleted or force-pushed)
    GET   /repos/{o}/{r}/issues/{n}/comments       (issues and pull requests)
    POST  /repos/{o}/{r}/issues/{n}/comments
    PATCH /repos/{o}/{r}/issues/comments/{id}       (edits are kept: ``Comment.edits``)
    POST  /repos/{o}/{r}/issues/{n}/reactions, …/issues/comments/{id}/reactions,
          …/pulls/comments/{id}/reactions
    POST  /repos/{o}/{r}/pulls/{n}/comments/{id}/replies   (a reply in a review thread)
    GET   /repos/{o}/{r}/collaborators/{user}/permission   (``set_permission``; default read)
    GET   /repos/{o}/{r}/contents/{path}           a file of the bare repository's main, base64
    POST  /repos/{o}/{r}/issues/{n}/labels         {labels: [...]} added to a pull request
    DELETE /repos/{o}/{r}/issues/{n}/labels/{name}  404 when it has no such label
    PUT   /repos/{o}/{r}/pulls/{n}/merge           a merge commit (``merge``); 405 when it is not
                                               open or a draft, 409 when ``sha`` is not the head

``GET /user`` answers the token's user, ``USER_LOGIN`` (``telecoder setup`` checks tokens so).

GitHub App (``enable_app``): ``GET /repos/{o}/{r}/installation`` and
``POST /app/installations/{id}/access_tokens`` take ``Bearer <JWT>`` verified with the App's
public key (RS256, ``iss`` the App id, at most ten minutes long); the installation tokens they
issue are accepted like ``token``, for REST and git, until they expire.

Webhooks: ``deliver(url, event, payload)`` POSTs a payload signed as GitHub signs it
(``X-Hub-Signature-256: sha256=<hex HMAC>`` with ``webhook_secret``, ``X-GitHub-Event``,
``X-GitHub-Delivery``); ``issue_payload``/``comment_payload``/… build the payloads.

Git (``/{o}/{r}.git/...``, HTTP Basic with the token as password, as GitHub takes it) is served by
``git http-backend`` from the bare repository given to ``add_repo``; with that git dir the REST
side also checks branches against the real repository. Every request is recorded; ``fail_next``
injects failures and ``before_next`` runs an action just before a request is handled (another
worker acting in the middle of ours).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.fakes.github_checks import FakeChecks
from tests.fakes.github_conversation import ConversationApi
from tests.fakes.github_http import _Handler
from tests.fakes.github_models import (
    DOCS,
    Comment,
    Issue,
    Pull,
    Reaction,
    Request,
    _ahead,
    _Failure,
    _git,
    _git_merge,
    _is_ancestor,
    _Refusal,
    _Repo,
    _validation,
)
from tests.fakes.github_webhooks import WebhookPayloads

TOKEN = "ghs_FakeToken0123456789abcdefABCDEF"
WEBHOOK_SECRET = "fake-webhook-secret-8d1f"
USER_LOGIN = "telecoder-bot"

_CONTENTS = re.compile(r"^/repos/([^/]+)/([^/]+)/contents/(.+)$")
_PERMISSION = re.compile(r"^/repos/([^/]+)/([^/]+)/collaborators/([^/]+)/permission$")
_LABEL = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/labels/([^/]+)$")
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"^/repos/([^/]+)/([^/]+)/pulls$", "_list_pulls"),
        ("POST", r"^/repos/([^/]+)/([^/]+)/pulls$", "_create_pull"),
        ("GET", r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)$", "_get_pull"),
        ("GET", r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)/files$", "_pull_files"),
        ("PATCH", r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)$", "_update_pull"),
        ("PUT", r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)/merge$", "_merge_pull"),
        ("POST", r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/labels$", "_add_labels"),
        ("GET", r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/comments$", "_list_comments"),
        ("POST", r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/comments$", "_create_comment"),
        ("PATCH", r"^/repos/([^/]+)/([^/]+)/issues/comments/(\d+)$", "_edit_comment"),
        ("POST", r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/reactions$", "_react_issue"),
        ("POST", r"^/repos/([^/]+)/([^/]+)/issues/comments/(\d+)/reactions$", "_react_comment"),
        ("POST", r"^/repos/([^/]+)/([^/]+)/pulls/comments/(\d+)/reactions$", "_react_review"),
        ("POST", r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)/comments/(\d+)/replies$", "_reply"),
    ]
]


class FakeGitHub(WebhookPayloads, FakeChecks, ConversationApi):
    def __init__(self, token: str = TOKEN, webhook_secret: str = WEBHOOK_SECRET) -> None:
        self.token = token
        self.webhook_secret = webhook_secret
        self._checks_init()
        self.app_id: str | None = None
        self.app_public_key: str | None = None
        self.installation_id = 4242
        self.token_ttl = 3600.0
        self.issued: dict[str, float] = {}  # installation token -> when it expires
        self.requests: list[Request] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._failures: list[_Failure] = []
        self._hooks: list[tuple[str, str, Callable[[], None]]] = []
        self._next_comment = 1
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- arranging -------------------------------------------------------------------------

    def add_repo(self, owner: str, name: str, git_dir: Path | None = None) -> None:
        with self._lock:
            self._repos[(owner, name)] = _Repo(owner=owner, name=name, git_dir=git_dir)

    def git_url(self, owner: str, name: str) -> str:
        return f"{self.url}/{owner}/{name}.git"

    def add_pull(
        self,
        owner: str,
        name: str,
        *,
        head: str,
        base: str = "main",
        title: str = "A pull request",
        body: str | None = None,
    ) -> Pull:
        """Open a pull request as someone else would, without going through the API."""
        with self._lock:
            repo = self._repo(owner, name)
            pull = Pull(owner, name, repo.next_number, title, body, head, base)
            pull.head_sha = self._sha(repo, head)
            repo.pulls[pull.number] = pull
            repo.next_number += 1
            return pull

    def enable_app(self, app_id: str, public_key_pem: str, installation_id: int = 4242) -> None:
        """Act as GitHub for an App installed on every repository (one installation)."""
        with self._lock:
            self.app_id, self.app_public_key = app_id, public_key_pem
            self.installation_id = installation_id

    def accepts(self, token: str) -> bool:
        with self._lock:
            return token == self.token or self.issued.get(token, 0) > time.time()

    def _app_request(self, request: Request) -> tuple[int, Any]:
        import jwt

        if self.app_public_key is None:
            return 404, {"message": "Not Found", "documentation_url": DOCS}
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                credential,
                self.app_public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
                leeway=60,
            )
        except jwt.PyJWTError as e:
            message = f"A JSON web token could not be decoded ({e})"
            return 401, {"message": message, "documentation_url": DOCS}
        if scheme != "Bearer" or str(claims["iss"]) != self.app_id:
            return 401, {
                "message": "'Issuer' claim ('iss') must be the App",
                "documentation_url": DOCS,
            }
        if claims["exp"] - claims["iat"] > 660:
            message = "'Expiration time' claim ('exp') is too far in the future"
            return 401, {"message": message, "documentation_url": DOCS}
        if request.method == "GET":
            match = re.match(r"^/repos/([^/]+)/([^/]+)/installation$", request.path)
            if match is None or (match[1], match[2]) not in self._repos:
                return 404, {"message": "Not Found", "documentation_url": DOCS}
            return 200, {"id": self.installation_id, "app_id": int(self.app_id)}
        match = re.match(r"^/app/installations/(\d+)/access_tokens$", request.path)
        if match is None or int(match[1]) != self.installation_id:
            return 404, {"message": "Not Found", "documentation_url": DOCS}
        with self._lock:
            token = f"ghs_inst{len(self.issued) + 1:04d}" + uuid.uuid4().hex[:24]
            expires = time.time() + self.token_ttl
            self.issued[token] = expires
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 201, {"token": token, "expires_at": stamp, "permissions": {"contents": "write"}}

    def add_issue(
        self, owner: str, name: str, *, title: str, body: str = "", login: str = "octocat"
    ) -> Issue:
        with self._lock:
            repo = self._repo(owner, name)
            issue = Issue(repo.next_number, title, body, login)
            repo.issues[issue.number] = issue
            repo.next_number += 1
            return issue

    def add_comment(
        self,
        owner: str,
        name: str,
        number: int,
        body: str,
        *,
        login: str = "octocat",
        kind: str = "issue",
    ) -> Comment:
        """A comment someone else wrote (``kind`` review: a review comment)."""
        with self._lock:
            repo = self._repo(owner, name)
            comment = Comment(self._next_comment, owner, name, number, body, login, kind)
            self._next_comment += 1
            repo.comments.append(comment)
            return comment

    def set_permission(self, owner: str, name: str, login: str, permission: str) -> None:
        with self._lock:
            self._repo(owner, name).permissions[login] = permission

    def reactions(self, owner: str, name: str) -> list[Reaction]:
        with self._lock:
            return list(self._repo(owner, name).reactions)

    def pulls(self, owner: str, name: str) -> list[Pull]:
        with self._lock:
            return sorted(self._repo(owner, name).pulls.values(), key=lambda pull: pull.number)

    def comments(self, owner: str, name: str) -> list[Comment]:
        with self._lock:
            return list(self._repo(owner, name).comments)

    def close(self, owner: str, name: str, number: int) -> None:
        with self._lock:
            self._repo(owner, name).pulls[number].state = "closed"

    def merge(self, owner: str, name: str, number: int) -> None:
        """Merge with a merge commit, as GitHub does; in the real repository when there is one."""
        with self._lock:
            repo = self._repo(owner, name)
            pull = repo.pulls[number]
            if repo.git_dir is not None:
                _git_merge(repo.git_dir, pull)
            pull.state, pull.merged = "closed", True

    def fail_next(
        self,
        status: int = 502,
        *,
        count: int = 1,
        message: str = "Server Error",
        headers: dict[str, str] | None = None,
        disconnect: bool = False,
    ) -> None:
        """Answer the next ``count`` REST requests with ``status`` (or by hanging up)."""
        with self._lock:
            failure = _Failure(status, message, dict(headers or {}), disconnect)
            self._failures.extend([failure] * count)

    def before_next(self, method: str, path: str, action: Callable[[], None]) -> None:
        """Run ``action`` once, just before the next ``method path`` request is handled."""
        with self._lock:
            self._hooks.append((method, path, action))

    def api_requests(self, method: str | None = None) -> list[Request]:
        with self._lock:
            return [
                request
                for request in self.requests
                if request.path.startswith("/repos/") and method in (None, request.method)
            ]

    # --- serving (called from handler threads) ---------------------------------------------

    def _repo(self, owner: str, name: str) -> _Repo:
        try:
            return self._repos[(owner, name)]
        except KeyError:
            raise _Refusal(404, "Not Found") from None

    def _sha(self, repo: _Repo, branch: str) -> str | None:
        if repo.git_dir is None:
            return None
        result = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            cwd=repo.git_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip() or None

    def _branch_missing(self, repo: _Repo, branch: str) -> bool:
        return repo.git_dir is not None and self._sha(repo, branch) is None

    def _run_hooks(self, method: str, path: str) -> None:
        with self._lock:
            for hook in list(self._hooks):
                if hook[:2] == (method, path):
                    self._hooks.remove(hook)
                    hook[2]()

    def _take_failure(self) -> _Failure | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        if method == "GET" and path == "/user":
            return {"login": USER_LOGIN, "id": 1, "type": "User"}
        with self._lock:
            contents = _CONTENTS.match(path)
            if contents and method == "GET":
                return self._contents(self._repo(contents[1], contents[2]), contents[3], query)
            permission = _PERMISSION.match(path)
            if permission and method == "GET":
                return self._permission(self._repo(permission[1], permission[2]), permission[3])
            label = _LABEL.match(path)
            if label and method == "DELETE":
                pull = self._pull(self._repo(label[1], label[2]), int(label[3]))
                name = unquote(label[4])
                if name not in pull.labels:
                    raise _Refusal(404, "Label does not exist")
                pull.labels.remove(name)
                return [{"name": n} for n in pull.labels]
            for route_method, pattern, handler in _ROUTES:
                match = pattern.match(path)
                if match and route_method == method:
                    owner, name, *rest = match.groups()
                    repo = self._repo(owner, name)
                    return getattr(self, handler)(repo, *map(int, rest), query=query, body=body)
            raise _Refusal(404, "Not Found")

    def _list_pulls(self, repo: _Repo, *, query: dict[str, str], body: Any) -> list[Any]:
        state = query.get("state", "open")
        pulls = [
            pull
            for pull in repo.pulls.values()
            if (state == "all" or pull.state == state)
            and ("head" not in query or pull.label == query["head"])
            and ("base" not in query or pull.base == query["base"])
        ]
        pulls.sort(key=lambda pull: pull.number, reverse=query.get("direction", "desc") == "desc")
        per_page = min(int(query.get("per_page", "30")), 100)
        page = int(query.get("page", "1"))
        chosen = pulls[(page - 1) * per_page : page * per_page]
        return [pull.to_json(self.url, full=False) for pull in chosen]

    def _create_pull(self, repo: _Repo, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            raise _Refusal(400, "Problems parsing JSON")
        for key in ("title", "head", "base"):
            if not body.get(key):
                raise _validation(field=key, code="missing_field")
        head = str(body["head"]).split(":")[-1]
        base = str(body["base"])
        for key, branch in (("head", head), ("base", base)):
            if self._branch_missing(repo, branch):
                raise _validation(field=key, code="invalid")
        if any(
            p.state == "open" and p.head == head and p.base == base for p in repo.pulls.values()
        ):
            message = f"A pull request already exists for {repo.owner}:{head}."
            raise _validation(code="custom", message=message)
        if repo.git_dir is not None and not _ahead(repo.git_dir, base, head):
            message = f"No commits between {base} and {head}"
            raise _validation(code="custom", message=message)
        pull = Pull(
            repo.owner,
            repo.name,
            repo.next_number,
            str(body["title"]),
            body.get("body"),
            head,
            base,
            head_sha=self._sha(repo, head),
            maintainer_can_modify=bool(body.get("maintainer_can_modify", False)),
            draft=bool(body.get("draft", False)),
        )
        repo.pulls[pull.number] = pull
        repo.next_number += 1
        return 201, pull.to_json(self.url)

    def _pull(self, repo: _Repo, number: int) -> Pull:
        if number not in repo.pulls:
            raise _Refusal(404, "Not Found")
        return repo.pulls[number]

    def _get_pull(self, repo: _Repo, number: int, *, query: dict[str, str], body: Any) -> Any:
        return self._pull(repo, number).to_json(self.url)

    def _pull_files(self, repo: _Repo, number: int, *, query: dict[str, str], body: Any) -> Any:
        pull = self._pull(repo, number)
        if repo.git_dir is None:
            return []
        stat = _git(repo.git_dir, "diff", "--numstat", f"{pull.base}...{pull.head}")
        files = []
        for line in stat.stdout.splitlines():
            added, deleted, name = line.split("\t", 2)
            files.append(
                {
                    "filename": name,
                    "status": "modified",
                    "additions": int(added) if added.isdigit() else 0,
                    "deletions": int(deleted) if deleted.isdigit() else 0,
                }
            )
        return files

    def _update_pull(self, repo: _Repo, number: int, *, query: dict[str, str], body: Any) -> Any:
        pull = self._pull(repo, number)
        if not isinstance(body, dict):
            raise _Refusal(400, "Problems parsing JSON")
        if body.get("state") == "open" and pull.state == "closed":
            self._check_reopen(repo, pull)
            pull.state, pull.head_sha = "open", self._sha(repo, pull.head)
        elif body.get("state") == "closed":
            pull.state = "closed"
        for key in ("title", "body", "base"):
            if key in body:
                setattr(pull, key, body[key])
        return pull.to_json(self.url)

    def _add_labels(self, repo: _Repo, number: int, *, query: dict[str, str], body: Any) -> Any:
        pull = self._pull(repo, number)
        labels = body.get("labels") if isinstance(body, dict) else None
        if not isinstance(labels, list) or not all(isinstance(n, str) and n for n in labels):
            raise _validation(resource="Label", field="labels", code="invalid")
        pull.labels.extend(n for n in labels if n not in pull.labels)
        return [{"name": n} for n in pull.labels]

    def _merge_pull(self, repo: _Repo, number: int, *, query: dict[str, str], body: Any) -> Any:
        pull = self._pull(repo, number)
        body = body if isinstance(body, dict) else {}
        if pull.state != "open" or pull.merged:
            raise _Refusal(405, "Pull Request is not mergeable")
        if pull.draft:
            raise _Refusal(405, "Pull Request is still a draft")
        sha = body.get("sha")
        if sha is not None and sha != self._sha(repo, pull.head):
            raise _Refusal(409, "Head branch was modified. Review and try the merge again.")
        self.merge(repo.owner, repo.name, number)
        tip = self._sha(repo, pull.base)
        return {"sha": tip, "merged": True, "message": "Pull Request successfully merged"}

    def _check_reopen(self, repo: _Repo, pull: Pull) -> None:
        def refuse(why: str) -> _Refusal:
            message = f"state cannot be changed. {why}"
            return _validation(code="custom", field="state", message=message)

        if pull.merged:
            raise refuse("The pull request has been merged.")
        if repo.git_dir is not None:
            tip = self._sha(repo, pull.head)
            if tip is None:
                raise refuse(f"The {pull.head} branch has been deleted.")
            if pull.head_sha is not None and not _is_ancestor(repo.git_dir, pull.head_sha, tip):
                raise refuse(f"The {pull.head} branch was force-pushed or recreated.")
        for other in repo.pulls.values():
            if other.state == "open" and (other.head, other.base) == (pull.head, pull.base):
                raise refuse(f"A pull request already exists for {pull.label}.")


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    """A fake GitHub on an ephemeral port; ``fake_github.token`` is the token it accepts."""
    with FakeGitHub() as server:
        yield server
