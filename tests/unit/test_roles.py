"""The role policy in one table: who may make which request (``server.roles``)."""

from __future__ import annotations

import pytest

from telecoder.server import roles
from telecoder.server.auth import AuthError, Principal

CASES = [
    # role, method, path, allowed
    ("admin", "POST", "/api/repos", True),
    ("admin", "GET", "/api/audit", True),
    ("member", "POST", "/api/sessions", True),
    ("member", "POST", "/sessions/abc/cancel", True),
    ("member", "POST", "/api/repos", False),
    ("member", "DELETE", "/api/endpoints/x", False),
    ("member", "GET", "/api/audit", False),
    ("member", "GET", "/audit", False),
    ("member", "GET", "/api/repos", True),
    ("member", "POST", "/api/runs", True),  # ownership of an id: checked by ``deps``
    ("member", "POST", "/runs/run_x/cancel", True),
    ("member", "POST", "/api/goals", True),
    ("member", "DELETE", "/api/jobs/nightly", True),  # and of a job: by its routes
    ("member", "POST", "/api/inbox/messages", False),
    ("viewer", "POST", "/api/runs/run_x/cancel", False),
    ("viewer", "POST", "/api/goals/goal_x/drop", False),
    ("viewer", "GET", "/api/sessions", True),
    ("viewer", "POST", "/api/sessions", False),
    ("viewer", "POST", "/new", False),
    ("viewer", "POST", "/logout", True),
    ("viewer", "GET", "/api/audit", False),
    ("worker", "GET", "/api/sessions", False),
    ("worker", "GET", "/", False),
    ("worker", "GET", "/api/workers", False),
    ("worker", "POST", "/api/workers/w1/claim", True),
    ("worker", "POST", "/mcp", False),
    ("viewer", "POST", "/mcp", True),  # its tools' API calls are checked one by one
]


@pytest.mark.parametrize(("role", "method", "path", "allowed"), CASES)
def test_role_policy(role: str, method: str, path: str, allowed: bool) -> None:
    principal = Principal(name="someone", via="bearer", role=role, user="someone")
    if allowed:
        roles.check(principal, method, path)
    else:
        with pytest.raises(AuthError) as refused:
            roles.check(principal, method, path)
        assert refused.value.status == 403


def test_members_own_what_they_submitted_and_lists_show_them_only_theirs() -> None:
    alice = Principal(name="alice", via="bearer", role="member", user="alice")
    admin = Principal(name="ops", via="bearer", user="ops")
    viewer = Principal(name="val", via="bearer", role="viewer", user="val")
    assert roles.owns(alice, "alice")
    assert not roles.owns(alice, "bob")
    assert not roles.owns(alice, None)  # the CLI's, a channel's or a hook's session
    assert roles.owns(admin, "bob")
    assert roles.owns(viewer, "bob")  # sees it (its writes are refused by ``check``)
    assert roles.list_owner(alice) == "alice"
    assert roles.list_owner(admin) is None
