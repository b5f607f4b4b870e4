"""The local forge: the pushed branch is the result; there is no pull request to open.

It is the fallback of ``auto`` forge selection, so it handles every remote.
"""

from __future__ import annotations

from collections.abc import Mapping

from telecoder.protocols import Publication, Published
from telecoder.settings import Settings


class LocalForge:
    name = "local"

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalForge:
        return cls()

    def handles(self, remote_url: str) -> bool:
        return True

    async def ready(self, remote_url: str) -> None:
        return None  # the remote's own credentials (ssh keys, a helper): nothing to fetch

    def git_env(self, remote_url: str) -> Mapping[str, str]:
        return {}

    async def publish(self, publication: Publication) -> Published:
        return Published()
