"""Before a push: the lines a session adds (``base..commit``) are scanned for secrets.

Two scanners look at every added line:

- `detect-secrets <https://github.com/Yelp/detect-secrets>`_ with its credential-format plugins
  (AWS, GitHub, GitLab, Slack, Stripe, OpenAI, private keys, JWTs, npm, PyPI, Twilio, …) and its
  default false-positive filters. Its guessing plugins are left out — high-entropy strings
  (every commit sha, lock-file hash and test fixture), ``password = …`` keywords and public IP
  addresses: a session failed for a false positive loses the agent's whole work. A line may
  silence it with detect-secrets' own ``# pragma: allowlist secret``.
- the ``Masker``: each secret value TeleCoder itself holds (and its base64), wherever it appears.

A hit fails the session (``secret_detected``) and nothing is pushed; the message names each
file and line and the kind of secret, never the value. A repository may allow paths in its
``.telecoder.yml`` (``secrets: {allow: [tests/fixtures/**]}``): findings in files matching one of
the globs are ignored (TeleCoder's own values are not: they are never allowed).
Binary files are not scanned (git shows no lines for them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from telecoder.masking import Masker

# detect-secrets' guessing plugins: noisy on ordinary code (see the module docstring).
EXCLUDED_PLUGINS = (
    "Base64HighEntropyString",
    "HexHighEntropyString",
    "KeywordDetector",
    "IPPublicDetector",
)
KNOWN = "a secret TeleCoder holds"
_LOCK = threading.Lock()  # detect-secrets keeps its settings in a process-wide singleton


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    path: str
    line: int
    kind: str  # the kind of secret, never its value

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.kind})"


def scan(diff: str, masker: Masker, allow: Sequence[str] = ()) -> list[Finding]:
    """The secrets on the lines ``diff`` (a unified diff) adds, in file and line order.

    Blocking (parses and scans in this thread): call it through ``asyncio.to_thread``.
    """
    if not diff.strip():
        return []
    found = {f for f in _detect_secrets(diff) if not _allowed(f.path, allow)}
    if masker:
        found.update(_known_values(diff, masker))
    return sorted(found)


def report(findings: Sequence[Finding], limit: int = 20) -> str:
    """The session's error: where the secrets are, what to do; never a value."""
    listed = ", ".join(str(f) for f in findings[:limit])
    more = f" and {len(findings) - limit} more" if len(findings) > limit else ""
    return (
        f"the change adds secrets, so nothing was pushed: {listed}{more}. Remove them (and "
        "rotate any that are real); test data may be allowed with `secrets: {allow: [GLOB]}` in "
        ".telecoder.yml or a `# pragma: allowlist secret` comment on its line"
    )


def _detect_secrets(diff: str) -> Iterable[Finding]:
    # Imported here: a fifth of a second (requests and all), paid only when something is pushed.
    from detect_secrets.core.secrets_collection import SecretsCollection
    from detect_secrets.settings import default_settings

    with _LOCK, default_settings() as settings:
        settings.disable_plugins(*EXCLUDED_PLUGINS)
        # It checks that each file exists relative to the current directory: the diff is text.
        settings.disable_filters("detect_secrets.filters.common.is_invalid_file")
        collection = SecretsCollection()
        collection.scan_diff(diff)
        return [
            Finding(path=path, line=secret.line_number, kind=secret.type)
            for path, secret in collection
        ]


def _known_values(diff: str, masker: Masker) -> Iterable[Finding]:
    from unidiff.patch import PatchSet

    for patched in PatchSet.from_string(diff):
        for hunk in patched:
            for line in hunk.target_lines():
                if line.is_added and line.target_line_no and masker.found(line.value):
                    yield Finding(path=patched.path, line=line.target_line_no, kind=KNOWN)


def _allowed(path: str, allow: Sequence[str]) -> bool:
    return any(fnmatchcase(path, glob) or path.startswith(glob.rstrip("/") + "/") for glob in allow)
