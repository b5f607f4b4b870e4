"""Read-only sessions' pure parts: the confinement mounts the worktree and the agent's git dir
read-only (still given to the sandbox's uid, which must read them) while the engine home stays
writable; the repository's setup, checks and follow-ups are dropped; a long answer keeps its
end, where a reviewer's JSON is."""

from __future__ import annotations

from pathlib import Path

from telecoder import readonly, repoconfig
from telecoder.confine import Confiner
from telecoder.recorder import MAX_TEXT
from telecoder.settings import Settings
from telecoder.worktree import Worktree


def _mounts(tmp_path: Path, read_only: bool) -> dict[Path, tuple[bool, bool]]:
    wt = Worktree(
        path=tmp_path / "worktrees" / "s1-1",
        branch="telecoder/s1",
        base="main",
        base_sha="0" * 40,
        remote_url="/r",
        mirror=tmp_path / "mirrors" / "r.git",
        git_dir=tmp_path / "mirrors" / "r.git" / "worktrees" / "s1-1",
    )
    confiner = Confiner(
        Settings(home=tmp_path / "home"),
        label="s1",
        worktree=wt,
        home=tmp_path / "engines" / "s1",
        git_dir=tmp_path / "engines" / "s1" / "git",
        config=repoconfig.RepoConfig(),
        model_env={},
        read_only=read_only,
    )
    mounts = confiner.for_role("agent").mounts
    return {m.target: (m.writable, m.owned) for m in mounts if m.target.is_relative_to(tmp_path)}


def test_a_read_only_session_mounts_its_worktree_and_git_dir_read_only(tmp_path: Path) -> None:
    wt, git_dir, home = (
        tmp_path / "worktrees" / "s1-1",
        tmp_path / "mirrors" / "r.git" / "worktrees" / "s1-1",
        tmp_path / "engines" / "s1",
    )
    assert _mounts(tmp_path, read_only=True) == {
        wt: (False, True),
        git_dir: (False, True),
        home: (True, False),
        tmp_path / "mirrors" / "r.git" / "objects": (False, False),
    }
    written = _mounts(tmp_path, read_only=False)
    assert (written[wt], written[git_dir]) == ((True, True), (True, True))


def test_the_repository_runs_nothing_for_a_read_only_session() -> None:
    config = repoconfig.parse(
        "setup: make deps\nverify: make test\nmax_revisions: 1\nreview: council\n"
        "on_success:\n  - prompt: deploy it\n"
    )
    narrowed = readonly.narrowed(config)
    assert (narrowed.setup, narrowed.verify, narrowed.has_checks) == ([], [], False)
    assert narrowed.follow_ups(3) is None
    assert narrowed.review is None
    assert narrowed.max_revisions == 1


def test_a_long_answer_keeps_its_end() -> None:
    text = "x" * MAX_TEXT + '```json\n{"recommendations": []}\n```'
    kept = readonly.tail(text)
    assert kept is not None
    assert kept.endswith('{"recommendations": []}\n```')
    assert kept.startswith("[35 characters cut] …")
    assert len(kept) == MAX_TEXT + len("[35 characters cut] …")
    assert readonly.tail("short") == "short"
