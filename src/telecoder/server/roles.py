"""What each role may do — the one place the server decides it (``deps`` applies it to every
API route and dashboard page).

- ``admin``: everything (an env token of ``TELECODER_API_TOKEN`` is an admin of its name; so
  is everyone on an open server).
- ``member``: sees and acts on their own sessions, runs, goals and cron jobs only (their
  ``user``: who submitted or defined them): someone else's is ``404`` to them, for reads and
  actions alike (a ``403`` would tell them the id exists), and lists show them their own; of
  the inbox, the messages of their sessions' and runs' agents. Other writes (repositories,
  endpoints, hooks, budgets, the inbox, …) are for admins: ``403``.
- ``viewer``: reads only; any unsafe method is ``403`` (signing out aside).
- ``worker``: a remote worker's token: only the paths under :data:`WORKER_PREFIXES`; anything
  else is ``403``. The remote-worker endpoints extend that tuple.
- Admin-only reads (the audit log): :data:`ADMIN_PREFIXES`.
- ``/mcp``: any role but ``worker``; its tools call the API with the caller's token, so the
  rules above apply to each tool call.
"""

from __future__ import annotations

from telecoder.server.auth import SAFE_METHODS, AuthError, Principal

ROLES = ("admin", "member", "viewer", "worker")
WORKER_PREFIXES: tuple[str, ...] = ("/api/workers/",)
# Under WORKER_PREFIXES but an operator's (``telecoder workers drain``): not a worker's.
WORKER_ADMIN_SUFFIXES: tuple[str, ...] = ("/drain", "/resume")
ADMIN_PREFIXES: tuple[str, ...] = ("/api/audit", "/audit")
# Where a member may write (their own things: ownership is checked on the session, run or goal
# id by ``deps``, on a job's name by its routes).
MEMBER_WRITE_PREFIXES: tuple[str, ...] = (
    "/api/sessions",
    "/new",
    "/sessions/",
    "/api/runs",
    "/runs/",
    "/api/goals",
    "/api/jobs",
)
ALWAYS = ("/logout",)  # anyone signed in may sign out
# Its tools call the API in-process with the caller's token: each call is checked (and
# audited) there, so /mcp itself is open to every role but ``worker``.
THROUGH = ("/mcp",)


def check(principal: Principal, method: str, path: str) -> None:
    """Raise AuthError(403) when ``principal``'s role may not make this request."""
    role = principal.role
    if role == "admin" or path in ALWAYS:
        return
    if role == "worker":
        if not path.startswith(WORKER_PREFIXES) or path.endswith(WORKER_ADMIN_SUFFIXES):
            raise AuthError(403, "a worker token may only call the worker endpoints")
        return
    if path in THROUGH:
        return
    if path.startswith(ADMIN_PREFIXES):
        raise AuthError(403, "admins only")
    if method in SAFE_METHODS:
        return
    if role == "viewer":
        raise AuthError(403, "a viewer may not change anything")
    if role == "member" and path.startswith(MEMBER_WRITE_PREFIXES):
        return
    raise AuthError(403, "admins only")


def owns(principal: Principal, owner: str | None) -> bool:
    """Whether ``principal`` may see and act on something of ``owner`` (a session's, run's,
    goal's or job's ``user``): a member, only on their own. (Admins and viewers see
    everything; a worker's endpoints hold their own leases.)"""
    if principal.role != "member":
        return True
    return owner is not None and owner == principal.user


def list_owner(principal: Principal) -> str | None:
    """Whose things a list shows: a member's own; None (everyone's) for other roles."""
    return principal.user or "" if principal.role == "member" else None
