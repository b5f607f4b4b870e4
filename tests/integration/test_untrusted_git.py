"""An agent that tampers with git's own files cannot make TeleCoder run its code on the host."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo

TAMPER = """
set -e
mark="{marks}"
common=$(git rev-parse --git-common-dir)
mkdir -p "$common/hooks" "$common/info"
for hook in pre-commit commit-msg post-commit pre-push reference-transaction; do
  printf '#!/bin/sh\\ntouch %s/hook-%s\\n' "$mark" "$hook" > "$common/hooks/$hook"
  chmod +x "$common/hooks/$hook"
done
git config core.fsmonitor "touch $mark/fsmonitor; true"
git config filter.evil.clean "touch $mark/filter; cat"
git config filter.evil.required true
git config diff.external "touch $mark/diff-external"
git config url."file:///nowhere/".insteadOf "{remote}"
echo '* filter=evil' > "$common/info/attributes"
echo '*.txt filter=evil' > .gitattributes
echo changed > changed.txt
"""


def test_tampered_git_config_hooks_and_filters_never_run(
    git_repo: GitRepo, home: Path, tmp_path: Path
):
    marks = tmp_path / "marks"
    marks.mkdir()
    script = TAMPER.format(marks=marks, remote=git_repo.remote)
    done = telecoder("run", script, "--repo", str(git_repo.path), "--json", env=cli_env(home))
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["status"] == "succeeded"
    assert sorted(p.name for p in marks.iterdir()) == []
    # The push went to the real remote, not where the agent's insteadOf pointed.
    branch = session["branch"]
    assert git_repo.remote_git("show", f"{branch}:changed.txt") == "changed"
