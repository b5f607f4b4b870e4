"""The ``local`` forge: the pushed branch is the result; no pull request."""

from __future__ import annotations

from collections.abc import Mapping

from telecoder.protocols import Publication, Published


class LocalForge:
    name = "local"

    def handles(self, remote_url: str) -> bool:
        return True

    def git_env(self, remote_url: str) -> Mapping[str, str]:
        return {}

    async def publish(self, publication: Publication) -> Published:
        return Published()
