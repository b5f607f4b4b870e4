"""``.telecoder.yml``: a repository's own settings, read from the worktree after checkout.

```yaml
engine: claude-code          # this repo's default engine: below --engine, above TELECODER_ENGINE
model: claude-sonnet-4-5     # its model, when the task names none
setup:                       # before the agent: install what it and the checks need
  - npm ci                   # (or a mapping: {commands: [...], cache_key: [...], cache: true})
verify:                      # commands that must pass before anything is pushed
  - pytest -q
  - ruff check .
checks:                      # mechanical checks
  - file_exists: CHANGELOG.md
  - command_succeeds: test -s VERSION
  - git_clean: true          # the checks change no file that would be committed
max_revisions: 2             # times the agent is asked to fix failing checks
push_failed: true            # work that fails the checks is pushed to telecoder/<id>-failed
verify_timeout: 600          # seconds each check command may take
setup_timeout: 1800          # seconds each setup command may take
secrets:                     # the secret scan before a push (telecoder.secretscan)
  allow: [tests/fixtures/*]  # files whose look-alike secrets are test data (globs)
budget:                      # a session's limits, when the task sets none (below --budget and
  usd: 2.0                   # --max-time, above TELECODER_BUDGET_USD and
  max_time: 30m              # TELECODER_TIMEOUT_SECONDS): 90s, 30m, 2h, 1h30m
github:                      # GitHub as a trigger (read from the default branch)
  label: telecoder           # labelling an issue with it starts a session
  handle: telecoder          # @telecoder in an issue or comment starts one
  ci_fix_attempts: 2         # fix sessions for a failed check, per pull request
  on_merge:                  # prompts run after a TeleCoder pull request is merged
    - Add a CHANGELOG entry for the change
on_success:                  # follow-up sessions when a session succeeds (a chain, ``chains``)
  - prompt: "Write tests for the change on {{ session.branch }}"
    engine: codex            # optional: default the finished session's engine
    repo: acme/docs          # optional: default the same repository
on_failure:                  # ... when it fails for good (after its retries)
  - Explain why {{ session.id }} failed: {{ session.error }}
auto_merge: low              # merge its own low-risk pull requests whose checks passed (off)
review: council              # review the diff before publishing: council | ENGINE[:MODEL] (off)
review_severity: high        # a consensus or majority finding at or above this blocks (high)
memory: off                  # no memories given to this repo's sessions, none stored (on)
```

Parsing is data only: ``yaml.safe_load`` (no tags, no code) of a file of bounded size, then a
pydantic model that refuses unknown keys. A malformed file is ``BadInput`` naming the field.
Nothing runs while parsing; the commands run later, in the worktree, through the runtime.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from telecoder import followups
from telecoder.amounts import duration
from telecoder.errors import BadInput, TeleCoderError

FILENAME = ".telecoder.yml"
MAX_BYTES = 64 * 1024

_Command = Annotated[str, Field(min_length=1, max_length=4000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileExists(_Strict):
    """The file (relative to the repository root) exists after the agent's work."""

    file_exists: Annotated[str, Field(min_length=1, max_length=1000)]


class CommandSucceeds(_Strict):
    """The shell command exits 0 in the worktree."""

    command_succeeds: _Command


class GitClean(_Strict):
    """The checks leave every file that would be committed as the agent left it."""

    git_clean: Literal[True]


CHECK_KINDS = ("file_exists", "command_succeeds", "git_clean")


def _check_kind(value: Any) -> str | None:
    """Which check a mapping is: its one key (None for anything else: a clear error)."""
    if isinstance(value, dict):
        keys = list(value)
        return keys[0] if len(keys) == 1 and keys[0] in CHECK_KINDS else None
    return next((k for k in CHECK_KINDS if hasattr(value, k)), None)


Check = Annotated[
    Annotated[FileExists, Tag("file_exists")]
    | Annotated[CommandSucceeds, Tag("command_succeeds")]
    | Annotated[GitClean, Tag("git_clean")],
    Discriminator(
        _check_kind,
        custom_error_type="check_kind",
        custom_error_message=(
            "each check is one of `file_exists: PATH`, `command_succeeds: COMMAND`, "
            "`git_clean: true`"
        ),
    ),
]


_Host = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9*.:_\[\]-]+$")]
_Policy = Literal["none", "model", "allowlist", "open"]


class Network(_Strict):
    """``network:``: what the agent, the setup commands and the checks may reach."""

    policy: _Policy | None = None  # the agent's; default TELECODER_NETWORK_POLICY (model)
    setup: _Policy | None = None  # default TELECODER_SETUP_NETWORK_POLICY (allowlist)
    verify: _Policy | None = None  # default TELECODER_VERIFY_NETWORK_POLICY (none)
    allow: list[_Host] = Field(default_factory=list, max_length=200)
    """Hosts the ``allowlist`` policy adds: ``host``, ``*.domain``, ``host:port``."""


_Glob = Annotated[str, Field(min_length=1, max_length=1000)]


class SecretsConfig(_Strict):
    """The secret scan before a push."""

    allow: list[_Glob] = Field(default_factory=list, max_length=100)
    """Paths (globs, or folders) whose findings are test data, not secrets. TeleCoder's own
    secret values are refused in any file."""


class BudgetConfig(_Strict):
    """``budget:``: a session's limits when the task sets none."""

    usd: float | None = Field(default=None, ge=0, le=1_000_000)
    """Dollars the session's model requests may cost before it stops and asks for more."""
    max_time: float | None = None
    """Wall-clock limit: ``90s``, ``30m``, ``2h``, ``1h30m`` (or seconds)."""

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            return duration(value)
        except TeleCoderError as e:
            raise ValueError(e.message) from None


_Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\s@][^\r\n]*$")]


class GitHubConfig(_Strict):
    """``github:``: how the repository's issues and pull requests start sessions."""

    label: _Name | None = None
    """The trigger label; default TELECODER_GITHUB_LABEL (telecoder)."""
    handle: (
        Annotated[str, Field(min_length=1, max_length=39, pattern=r"^[A-Za-z0-9-]+$")] | None
    ) = None
    """The handle to mention, without @; default TELECODER_GITHUB_HANDLE (telecoder)."""
    ci_fix_attempts: int = Field(default=2, ge=0, le=10)
    """Fix sessions for failed checks on one pull request before TeleCoder gives up."""
    on_merge: list[Annotated[str, Field(min_length=1, max_length=4000)]] = Field(
        default_factory=list, max_length=10
    )
    """Prompts of the follow-up sessions after a TeleCoder pull request is merged."""


class FollowUp(_Strict):
    """One follow-up session of ``on_success`` / ``on_failure`` (a plain string is its prompt)."""

    prompt: Annotated[str, Field(min_length=1, max_length=4000)]
    """The task; may use ``{{ session.id }}``, ``{{ session.branch }}``, ``{{ result.text }}``…
    (``followups.PLACEHOLDERS``), rendered as plain text."""
    engine: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """Its engine; default the finished session's."""
    repo: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    """Its repository (a name TeleCoder knows); default the finished session's."""

    @field_validator("prompt")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        if bad := followups.unknown(value):
            known = ", ".join(followups.PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{{ {bad[0]} }}}} (known: {known})")
        return value


def _follow_ups(value: Any) -> Any:
    if isinstance(value, str | dict):
        value = [value]
    if isinstance(value, list):
        return [{"prompt": v} if isinstance(v, str) else v for v in value]
    return value


class RepoConfig(_Strict):
    """The settings a repository gives itself in ``.telecoder.yml``."""

    engine: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """The repository's default engine: below ``--engine``, above ``TELECODER_ENGINE``."""
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """The model, when the task names none and the engine in use is the repository's."""
    setup: list[_Command] = Field(default_factory=list, max_length=50)
    """Shell commands run in a new worktree before the agent; each must exit 0 and leave
    nothing that would be committed (what they install goes to ignored paths)."""
    setup_cache_key: list[_Glob] = Field(default_factory=list, max_length=100)
    """``setup: {cache_key: [...]}``: more files (paths or globs) whose content keys the
    setup cache, besides the lockfiles and manifests (``setupcache``)."""
    setup_cache: bool = True
    """``setup: {cache: false}``: run the setup in every session, never from the cache."""
    verify: list[_Command] = Field(default_factory=list, max_length=50)
    """Shell commands run in the worktree after the agent; each must exit 0."""
    checks: list[Check] = Field(default_factory=list, max_length=50)
    """Mechanical checks: ``file_exists``, ``command_succeeds``, ``git_clean``."""
    max_revisions: int = Field(default=2, ge=0, le=10)
    """How often the agent is resumed with the failure report before the session fails."""
    push_failed: bool | None = None
    """Push the work of a session whose checks kept failing to ``telecoder/<id>-failed`` (no
    pull request); None: ``TELECODER_PUSH_FAILED`` decides."""
    verify_timeout: float = Field(default=600.0, gt=0, le=24 * 3600)
    """Seconds each verify command (and ``command_succeeds``) may run."""
    setup_timeout: float = Field(default=1800.0, gt=0, le=24 * 3600)
    """Seconds each setup command may run."""
    network: Network = Field(default_factory=Network)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    """The secret scan before a push: ``allow`` lists paths whose findings are ignored."""
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    """The session's budget and time limit, below the task's own and above the settings'."""
    github: GitHubConfig = Field(default_factory=GitHubConfig)
    """GitHub as a trigger: label, handle, ci_fix_attempts, on_merge."""
    on_success: list[FollowUp] = Field(default_factory=list, max_length=10)
    """Follow-up sessions spawned when a session of this repository succeeds (``chains``)."""
    on_failure: list[FollowUp] = Field(default_factory=list, max_length=10)
    """Follow-up sessions spawned when one fails for good (failed or dead, after retries)."""

    @model_validator(mode="before")
    @classmethod
    def _setup_mapping(cls, data: Any) -> Any:
        """``setup:`` as a mapping: ``commands``, ``cache_key``, ``cache``."""
        if not isinstance(data, dict):
            return data
        for name in ("setup_cache_key", "setup_cache"):
            if name in data:
                raise ValueError(f"{name} is not a setting: use setup: {{{name[6:]}: ...}}")
        setup = data.get("setup")
        if not isinstance(setup, dict):
            return data
        unknown = sorted(set(setup) - {"commands", "cache_key", "cache"})
        if unknown:
            raise ValueError(
                f"setup: unknown key {unknown[0]!r} (known: commands, cache_key, cache)"
            )
        data = {**data, "setup": setup.get("commands") or []}
        if "cache_key" in setup:
            key = setup["cache_key"]
            data["setup_cache_key"] = [key] if isinstance(key, str) else key
        if "cache" in setup:
            data["setup_cache"] = setup["cache"]
        return data

    @field_validator("on_success", "on_failure", mode="before")
    @classmethod
    def _plain_prompts(cls, value: Any) -> Any:
        return _follow_ups(value)

    def follow_ups(self, max_depth: int) -> dict[str, Any] | None:
        """The rules as kept on the attempt (``store.chains``); None when there are none."""
        if not self.on_success and not self.on_failure:
            return None
        return {
            "max_depth": max_depth,
            "on_success": [f.model_dump(exclude_none=True) for f in self.on_success],
            "on_failure": [f.model_dump(exclude_none=True) for f in self.on_failure],
        }

    auto_merge: Literal["off", "low"] = "off"
    """``low``: a pull request TeleCoder opens merges itself when its risk tier is low and
    its checks passed (``telecoder.risk``); ``off`` (the default): a person merges."""

    review: (
        Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\w.:/-]*$")]
        | None
    ) = None
    """``council`` (the council's reviewers) or one ``ENGINE`` / ``ENGINE:MODEL``: the diff is
    reviewed after the checks pass and before anything is pushed (``telecoder.review``)."""
    review_severity: Literal["info", "low", "medium", "high", "critical"] = "high"
    """The severity at or above which a consensus or majority finding blocks publishing."""

    memory: Literal["on", "off"] = "on"
    """``off``: its sessions are given no memories of earlier sessions and leave none
    (``telecoder.remembering``); ``on`` (the default) when TELECODER_MEMORY is on."""

    @field_validator("memory", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare ``off`` / ``on`` as a boolean.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("review_severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("auto_merge", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        return "off" if value is False or value is None else value

    @field_validator("setup", "verify", mode="before")
    @classmethod
    def _one_command(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def has_checks(self) -> bool:
        return bool(self.verify or self.checks)


def parse(text: str) -> RepoConfig:
    """The config in ``text`` (YAML); ``BadInput`` with the offending field when it is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BadInput(f"{FILENAME} is not valid YAML: {e}") from None
    if data is None:
        return RepoConfig()
    if not isinstance(data, dict):
        raise BadInput(f"{FILENAME} must be a mapping of settings, not {type(data).__name__}")
    try:
        return RepoConfig.model_validate(data)
    except ValidationError as e:
        raise BadInput(f"{FILENAME} is invalid: {_describe(e)}") from None


def load(worktree: Path) -> RepoConfig:
    """The config at the root of ``worktree``; the defaults when there is none."""
    path = worktree / FILENAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise BadInput(f"{FILENAME} must be a regular file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return RepoConfig()
    return from_bytes(raw)


def from_bytes(raw: bytes | None) -> RepoConfig:
    """The config in a file's content (None: there is no file)."""
    if raw is None:
        return RepoConfig()
    if len(raw) > MAX_BYTES:
        raise BadInput(f"{FILENAME} is larger than {MAX_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{FILENAME} is not UTF-8 text") from None
    return parse(text)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        loc = [str(p) for p in item["loc"]]
        # A check's tag repeats its key: ``checks.0.file_exists.file_exists``.
        loc = [p for i, p in enumerate(loc) if i == 0 or p != loc[i - 1]]
        where = ".".join(loc) or "(top level)"
        parts.append(f"{where}: {_plain(item, loc)}")
    return "; ".join(parts)


def _plain(item: Any, loc: list[str]) -> str:
    """pydantic's message in plain words, with a suggestion where one helps."""
    kind = item["type"]
    if kind == "extra_forbidden":
        name = loc[-1] if loc else "?"
        known = _known_keys(len(loc) <= 1)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            return f"there is no setting {name!r}: did you mean {close[0]!r}?"
        if len(loc) <= 1:
            return f"there is no setting {name!r} (the settings: {', '.join(sorted(known))})"
        return f"there is no setting {name!r} here (see the README's .telecoder.yml section)"
    if kind == "missing":
        return "this setting is required here"
    return str(item["msg"]).removeprefix("Value error, ")


def _known_keys(top: bool) -> list[str]:
    """The settings' names: the file's top level, or those of every nested part."""
    if top:
        return list(RepoConfig.model_fields)
    names: set[str] = set()
    pending: list[type[BaseModel]] = [_Strict]
    while pending:
        for sub in pending.pop().__subclasses__():
            names.update(sub.model_fields)
            pending.append(sub)
    return sorted(names)
