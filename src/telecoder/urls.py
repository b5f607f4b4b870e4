"""Whether a repository is named by a URL (``https://…``, ``ssh://…``, ``git@host:path``) or
is a local path: a check without git's machinery, for the command line's quick paths."""

from __future__ import annotations

import re

_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)


def is_url(repo: str) -> bool:
    return bool(_URL.match(repo))
