"""The fake GitHub's conversation endpoints (``self`` is the ``FakeGitHub``): issue comments and
their edits, reactions, replies in review threads, a file's contents, a collaborator's
permission."""

from __future__ import annotations

import base64
import subprocess
from typing import Any

from tests.fakes.github_models import Comment, Pull, Reaction, _Refusal, _Repo, _validation
from tests.fakes.github_webhooks import user_json as _user


class ConversationApi:
    url: str
    _next_comment: int

    def _pull(self, repo: _Repo, number: int) -> Pull:  # defined by FakeGitHub
        raise NotImplementedError

    def _list_comments(self, repo: _Repo, number: int, *, query: dict[str, str], body: Any) -> Any:
        return [
            self._comment_json(c) for c in repo.comments if c.number == number and c.kind == "issue"
        ]

    def _create_comment(
        self, repo: _Repo, number: int, *, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if not isinstance(body, dict) or not body.get("body"):
            raise _validation("IssueComment", field="body", code="missing_field")
        if number not in repo.issues:
            self._pull(repo, number)
        comment = Comment(self._next_comment, repo.owner, repo.name, number, str(body["body"]))
        self._next_comment += 1
        repo.comments.append(comment)
        return 201, self._comment_json(comment)

    def _comment(self, repo: _Repo, comment_id: int, kind: str) -> Comment:
        for comment in repo.comments:
            if comment.id == comment_id and comment.kind == kind:
                return comment
        raise _Refusal(404, "Not Found")

    def _edit_comment(
        self, repo: _Repo, comment_id: int, *, query: dict[str, str], body: Any
    ) -> Any:
        if not isinstance(body, dict) or not body.get("body"):
            raise _validation("IssueComment", field="body", code="missing_field")
        comment = self._comment(repo, comment_id, "issue")
        comment.edits.append(comment.body)
        comment.body = str(body["body"])
        return self._comment_json(comment)

    def _react(self, repo: _Repo, subject: str, ident: int, body: Any) -> tuple[int, Any]:
        content = body.get("content") if isinstance(body, dict) else None
        if content not in {"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"}:
            raise _validation("Reaction", field="content", code="invalid")
        for reaction in repo.reactions:
            if (reaction.subject, reaction.id, reaction.content) == (subject, ident, content):
                return 200, {"id": ident, "content": content}  # as GitHub: the one there
        repo.reactions.append(Reaction(subject, ident, content))
        return 201, {"id": ident, "content": content, "user": _user("telecoder[bot]")}

    def _react_issue(self, repo: _Repo, number: int, *, query: dict[str, str], body: Any) -> Any:
        if number not in repo.issues:
            self._pull(repo, number)
        return self._react(repo, "issue", number, body)

    def _react_comment(self, repo: _Repo, ident: int, *, query: dict[str, str], body: Any) -> Any:
        self._comment(repo, ident, "issue")
        return self._react(repo, "comment", ident, body)

    def _react_review(self, repo: _Repo, ident: int, *, query: dict[str, str], body: Any) -> Any:
        self._comment(repo, ident, "review")
        return self._react(repo, "review_comment", ident, body)

    def _reply(
        self, repo: _Repo, number: int, ident: int, *, query: dict[str, str], body: Any
    ) -> Any:
        if not isinstance(body, dict) or not body.get("body"):
            raise _validation("PullRequestReviewComment", field="body", code="missing_field")
        self._pull(repo, number)
        parent = self._comment(repo, ident, "review")
        comment = Comment(
            self._next_comment, repo.owner, repo.name, number, str(body["body"]), kind="review"
        )
        comment.in_reply_to = parent.in_reply_to or parent.id
        self._next_comment += 1
        repo.comments.append(comment)
        return 201, self._comment_json(comment)

    def _contents(self, repo: _Repo, path: str, query: dict[str, str]) -> Any:
        """A file on the default branch (or ``ref``), base64 as GitHub sends it."""
        if repo.git_dir is None:
            raise _Refusal(404, "Not Found")
        ref = query.get("ref", "main")
        shown = subprocess.run(
            ["git", "show", f"{ref}:{path}"], cwd=repo.git_dir, capture_output=True, check=False
        )
        if shown.returncode != 0:
            raise _Refusal(404, "Not Found")
        return {
            "type": "file",
            "path": path,
            "encoding": "base64",
            "size": len(shown.stdout),
            "content": base64.encodebytes(shown.stdout).decode(),  # in lines, as GitHub does
        }

    def _permission(self, repo: _Repo, login: str) -> Any:
        permission = repo.permissions.get(login, "read")
        return {"permission": permission, "role_name": permission, "user": _user(login)}

    def _comment_json(self, comment: Comment) -> dict[str, Any]:
        where = f"{comment.owner}/{comment.repo}"
        bot = comment.login.endswith("[bot]")
        data: dict[str, Any] = {
            "id": comment.id,
            "url": f"{self.url}/repos/{where}/issues/comments/{comment.id}",
            "html_url": f"{self.url}/{where}/pull/{comment.number}#issuecomment-{comment.id}",
            "body": comment.body,
            "user": _user(comment.login, bot=bot),
        }
        if comment.kind == "review":
            data["url"] = f"{self.url}/repos/{where}/pulls/comments/{comment.id}"
            data["html_url"] = f"{self.url}/{where}/pull/{comment.number}#discussion_r{comment.id}"
            data["path"], data["line"], data["diff_hunk"] = "README.md", 1, "@@ -1 +1 @@"
            if comment.in_reply_to:
                data["in_reply_to_id"] = comment.in_reply_to
        return data
