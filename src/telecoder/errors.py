"""Errors a caller can act on.

    TeleCoderError
     ├── BadInput                 the request itself is wrong (CLI exit 2, HTTP 422)
     │    ├── RepoNotFound
     │    ├── NotAGitRepo
     │    ├── BaseRefNotFound
     │    ├── EngineNotFound
     │    ├── EngineUnavailable  its CLI is not installed here, or has no key
     │    └── PluginNotFound
     ├── SessionNotFound          (CLI exit 3, HTTP 404)
     ├── EndpointNotFound         no model endpoint has that name (CLI exit 3, HTTP 404)
     ├── Conflict                 the session is in a state that forbids this (CLI exit 4, HTTP 409)
     ├── LeaseLost                a worker no longer holds the attempt it writes for
     ├── WorkspaceError           git failed while preparing, committing or pushing
     │    └── PushRejected
     ├── SandboxUnavailable       no sandbox can start on this machine (not retried)
     ├── ForgeError               the forge's API refused or failed (``transient``: worth a retry)
     ├── RawLogNotFound           no raw log of the session on this host (CLI exit 3)
     ├── Unsupported              not available here (CLI exit 8)
     ├── StoreUnavailable         the database cannot be reached (CLI exit 6)
     ├── ServerUnavailable        a TeleCoder server cannot be reached or failed (CLI exit 6)
     └── Unauthorized             a TeleCoder server refused the API token (CLI exit 7)

Each class's docstring is its default message. Translate only at edges: the CLI maps errors to
messages and exit codes, the server to status codes, the worker to a failed attempt.
"""

from __future__ import annotations


class TeleCoderError(Exception):
    """TeleCoder failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadInput(TeleCoderError):
    """The request is invalid."""


class RepoNotFound(BadInput):
    """The repository does not exist."""


class NotAGitRepo(BadInput):
    """The path is not a git repository."""


class BaseRefNotFound(BadInput):
    """The base ref does not exist in the repository."""


class EngineNotFound(BadInput):
    """No engine has that name."""


class EngineUnavailable(BadInput):
    """The engine's CLI is not installed here or has no key, and no live worker offers it."""


class PluginNotFound(BadInput):
    """No implementation is registered under that name."""


class SessionNotFound(TeleCoderError):
    """No session has that id."""


class EndpointNotFound(TeleCoderError):
    """No model endpoint has that name."""


class WorkerNotFound(TeleCoderError):
    """No worker has that id."""


class UserNotFound(TeleCoderError):
    """No user of that name, or no API token of that id."""


class MessageNotFound(TeleCoderError):
    """No inbox message has that id."""


class TimedOut(TeleCoderError):
    """The wait timed out."""


class RawLogNotFound(TeleCoderError):
    """No raw log of that session on this host."""


class Unsupported(TeleCoderError):
    """Not available here."""


class Conflict(TeleCoderError):
    """The session's state does not allow this."""


class LeaseLost(TeleCoderError):
    """This worker no longer holds the attempt's lease."""


class WorkspaceError(TeleCoderError):
    """A git operation failed."""


class PushRejected(WorkspaceError):
    """The remote rejected the push."""


class SandboxUnavailable(TeleCoderError):
    """No sandbox can start here: install bubblewrap, or opt out with TELECODER_RUNTIME=local."""


class ForgeError(TeleCoderError):
    """The forge refused the request."""

    def __init__(
        self, message: str | None = None, *, transient: bool = False, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.transient = transient  # a later attempt may succeed: outage, timeout, rate limit
        self.status = status  # the forge's HTTP status, when it answered


class StoreUnavailable(TeleCoderError):
    """The database cannot be reached."""


class ServerUnavailable(TeleCoderError):
    """The TeleCoder server cannot be reached."""


class Unauthorized(TeleCoderError):
    """The TeleCoder server refused the request: no token, or a wrong one."""


class CacheEntryNotFound(TeleCoderError):
    """No setup cache entry has that key."""


class HookNotFound(TeleCoderError):
    """No hook has that name."""


class RegisteredRepoNotFound(TeleCoderError):
    """No repository is registered under that name."""


class GoalNotFound(TeleCoderError):
    """No goal has that id."""


class SubscriptionNotFound(TeleCoderError):
    """No subscription has that id."""


class WebhookSignatureInvalid(TeleCoderError):
    """The webhook's signature is missing or does not match its body."""


class JobNotFound(TeleCoderError):
    """No cron job has that name."""


class TemplateNotFound(TeleCoderError):
    """No prompt template has that name."""


class MemoryNotFound(TeleCoderError):
    """No memory has that id."""
