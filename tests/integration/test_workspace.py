"""Git for real: resolve repositories, mirrors and worktrees, commit without hooks, push safely."""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from telecoder.domain import DiffStats
from telecoder.errors import (
    BaseRefNotFound,
    NotAGitRepo,
    PushRejected,
    RepoNotFound,
    WorkspaceError,
)
from telecoder.settings import Settings
from telecoder.workspace import RepoSource, Workspace, Worktree
from tests.conftest import GitRepo, git, make_repo

DATE = 1_700_000_000.0
MESSAGE = "Rename colour\n\nTeleCoder-Session: x\n"


@pytest.fixture
def ws(settings: Settings) -> Workspace:
    return Workspace(mirrors=settings.mirrors, worktrees=settings.worktrees)


async def prepare(
    ws: Workspace,
    repo: GitRepo | str,
    name: str = "s1",
    base: str | None = None,
    branch: str | None = None,
) -> Worktree:
    spec = repo if isinstance(repo, str) else str(repo.path)
    source = await ws.resolve(spec)
    return await ws.prepare(name, source, branch=branch or f"telecoder/{name}", base=base)


def head(path: Path) -> str:
    return git("rev-parse", "HEAD", cwd=path)


def remote_sha(repo: GitRepo, branch: str) -> str | None:
    out = git("ls-remote", str(repo.remote), f"refs/heads/{branch}")
    return out.split("\t", 1)[0] if out else None


def commit_on_remote(repo: GitRepo, branch: str, name: str, content: str) -> str:
    """Someone else pushes a commit to ``branch`` of the remote (from the user's checkout)."""
    repo.git("checkout", "-q", "-B", f"tmp-{name}", "main")
    (repo.path / name).write_text(content)
    repo.git("add", name)
    repo.git("commit", "-q", "-m", f"add {name}")
    sha = repo.git("rev-parse", "HEAD")
    repo.git("push", "-q", "-f", "origin", f"HEAD:refs/heads/{branch}")
    repo.git("checkout", "-q", "main")
    return sha


# --- resolve ---------------------------------------------------------------------------------


async def test_resolve_a_checkout_with_origin(ws: Workspace, git_repo: GitRepo) -> None:
    top = git_repo.path.resolve()
    expected = RepoSource(spec=str(top), remote_url=str(git_repo.remote), checkout=top)
    assert await ws.resolve(str(git_repo.path)) == expected
    (git_repo.path / "sub" / "dir").mkdir(parents=True)
    assert await ws.resolve(str(git_repo.path / "sub" / "dir")) == expected


async def test_resolve_a_relative_origin(ws: Workspace, git_repo: GitRepo) -> None:
    git_repo.git("remote", "set-url", "origin", "../remotes/acme/repo.git")
    source = await ws.resolve(str(git_repo.path))
    assert source.remote_url == str(git_repo.remote.resolve())


async def test_resolve_a_checkout_without_remote(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "solo"
    git("init", "-q", "-b", "main", str(path))
    top = path.resolve()
    assert await ws.resolve(str(path)) == RepoSource(
        spec=str(top), remote_url=str(top), checkout=top
    )


async def test_resolve_a_bare_repository(ws: Workspace, git_repo: GitRepo) -> None:
    bare = git_repo.remote.resolve()
    assert await ws.resolve(str(git_repo.remote)) == RepoSource(
        spec=str(bare), remote_url=str(bare), checkout=None
    )


async def test_resolve_urls(ws: Workspace, git_repo: GitRepo, tmp_path: Path) -> None:
    url = f"file://{git_repo.remote}"
    assert await ws.resolve(url) == RepoSource(spec=url, remote_url=url)
    https = "https://example.invalid/acme/repo.git"
    assert await ws.resolve(https) == RepoSource(spec=https, remote_url=https)
    with pytest.raises(RepoNotFound):
        await ws.resolve(f"file://{tmp_path / 'missing.git'}")


async def test_resolve_refuses_missing_and_non_git(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(RepoNotFound):
        await ws.resolve(str(tmp_path / "missing"))
    with pytest.raises(RepoNotFound):
        await ws.resolve("  ")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotAGitRepo):
        await ws.resolve(str(plain))
    file = tmp_path / "file.txt"
    file.write_text("not a repository\n")
    with pytest.raises(NotAGitRepo, match="not a git repository"):
        await ws.resolve(str(file))  # was NotADirectoryError, running git in it


@pytest.mark.usefixtures("loose_umask")
async def test_mirrors_worktrees_and_locks_are_private(
    settings: Settings, git_repo: GitRepo
) -> None:
    ws = Workspace(mirrors=settings.mirrors, worktrees=settings.worktrees)
    wt = await prepare(ws, git_repo)
    locks = list(settings.mirrors.glob("*.lock"))
    assert locks
    for made in (settings.mirrors, settings.worktrees, *locks):
        assert (made.stat().st_mode & 0o777) in (0o700, 0o600), made
    assert wt.path.parent == settings.worktrees


# --- check_base ------------------------------------------------------------------------------


async def test_check_base(ws: Workspace, git_repo: GitRepo, tmp_path: Path) -> None:
    git_repo.git("tag", "v1")
    git_repo.git("push", "-q", "origin", "v1")
    source = await ws.resolve(str(git_repo.path))
    for base in (None, "main", "v1", git_repo.git("rev-parse", "HEAD")):
        await ws.check_base(source, base)
    with pytest.raises(BaseRefNotFound, match="nope"):
        await ws.check_base(source, "nope")
    with pytest.raises(BaseRefNotFound):
        await ws.check_base(source, "mai")  # a prefix is not a ref
    gone = RepoSource(spec="x", remote_url=str(tmp_path / "gone.git"))
    with pytest.raises(RepoNotFound):
        await ws.check_base(gone, "main")


def injected(tmp_path: Path) -> tuple[str, Path]:
    """A remote URL that git would take as ``--upload-pack``, and the file its command makes."""
    marker = tmp_path / "pwned"
    return f"--upload-pack=touch {marker}; false", marker


async def test_check_base_never_takes_the_url_as_an_option(
    ws: Workspace, git_repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, marker = injected(tmp_path)
    # Taken as an option, the URL leaves ls-remote to use the current checkout's origin.
    monkeypatch.chdir(git_repo.path)
    with pytest.raises(RepoNotFound):
        await ws.check_base(RepoSource(spec=url, remote_url=url), "main")
    assert not marker.exists()


# --- prepare ---------------------------------------------------------------------------------


async def test_prepare_from_the_default_branch(
    ws: Workspace, git_repo: GitRepo, settings: Settings
) -> None:
    wt = await prepare(ws, git_repo, "abc")
    main = git_repo.remote_git("rev-parse", "main")
    assert wt.path == settings.worktrees / "abc"
    assert (wt.branch, wt.base, wt.base_sha) == ("telecoder/abc", "main", main)
    assert wt.remote_url == str(git_repo.remote)
    assert wt.mirror.parent == settings.mirrors
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=wt.path) == "telecoder/abc"
    assert head(wt.path) == main
    assert (wt.path / "README.md").read_text() == "The colour of magic.\n"
    assert git("status", "--porcelain", cwd=wt.path) == ""


async def test_a_cold_prepare_writes_the_files_once(
    ws: Workspace, git_repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pooled worktree: the files are written by one ``reset --hard`` (what a plain ``git
    worktree add`` runs itself), and the new tree is not walked again (no ``clean``, no
    ``status``): its directory was empty. The index it leaves needs no refresh."""
    await prepare(ws, git_repo, "s0")  # the mirror
    calls = tmp_path / "git-calls"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {shutil.which("git")} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    wt = await prepare(ws, git_repo, "s1")
    monkeypatch.undo()
    made = calls.read_text().splitlines()
    on_files = [line for line in made if "--work-tree" in line]
    assert len(on_files) == 1, made
    assert on_files[0].endswith(" reset -q --hard"), made
    assert not [line for line in made if " clean " in f"{line} " or " status" in line], made
    assert git("diff-files", "--name-only", cwd=wt.path) == ""  # stat data already in the index
    assert git("status", "--porcelain", "--ignored", cwd=wt.path) == ""
    assert (wt.path / "README.md").read_text() == "The colour of magic.\n"


async def test_prepare_follows_the_remotes_default_branch(ws: Workspace, git_repo: GitRepo) -> None:
    trunk = commit_on_remote(git_repo, "trunk", "TRUNK", "t\n")
    git_repo.remote_git("symbolic-ref", "HEAD", "refs/heads/trunk")
    wt = await prepare(ws, git_repo)
    assert (wt.base, wt.base_sha) == ("trunk", trunk)


async def test_prepare_fetches_what_is_new(ws: Workspace, git_repo: GitRepo) -> None:
    first = await prepare(ws, git_repo, "s1")
    newer = commit_on_remote(git_repo, "main", "NEW", "new\n")
    second = await prepare(ws, git_repo, "s2")
    assert first.base_sha != newer
    assert second.base_sha == newer
    assert (second.path / "NEW").exists()


async def test_prepare_from_a_branch_tag_or_sha(ws: Workspace, git_repo: GitRepo) -> None:
    initial = git_repo.git("rev-parse", "HEAD")
    git_repo.git("tag", "v1")
    git_repo.git("push", "-q", "origin", "v1")
    feature = commit_on_remote(git_repo, "feature", "FEATURE", "f\n")
    newer_main = commit_on_remote(git_repo, "main", "MAIN2", "m\n")

    wt = await prepare(ws, git_repo, "b1", base="feature")
    assert (wt.base, wt.base_sha, head(wt.path)) == ("feature", feature, feature)
    assert (wt.path / "FEATURE").exists()

    wt = await prepare(ws, git_repo, "t1", base="v1")
    assert (wt.base, wt.base_sha, head(wt.path)) == ("main", initial, initial)
    assert not (wt.path / "MAIN2").exists()

    for i, sha in enumerate((feature, feature[:8])):
        wt = await prepare(ws, git_repo, f"h{i}", base=sha)
        assert (wt.base, wt.base_sha, head(wt.path)) == ("main", feature, feature)

    wt = await prepare(ws, git_repo, "m1")
    assert wt.base_sha == newer_main


async def test_prepare_refuses_an_unknown_base(ws: Workspace, git_repo: GitRepo) -> None:
    for base in ("nope", "deadbeefdeadbeef"):
        with pytest.raises(BaseRefNotFound):
            await prepare(ws, git_repo, "x", base=base)


async def test_prepare_again_after_a_crash(
    ws: Workspace, git_repo: GitRepo, settings: Settings
) -> None:
    wt = await prepare(ws, git_repo, "s1")
    (wt.path / "junk.txt").write_text("half-done work\n")
    (wt.path / "README.md").write_text("changed\n")
    git("add", "-A", cwd=wt.path)
    git("commit", "-q", "-m", "crashed attempt's commit", cwd=wt.path)
    # A new process (fresh Workspace), same session: a clean worktree from the base again.
    again = await prepare(Workspace(mirrors=ws.mirrors, worktrees=ws.worktrees), git_repo, "s1")
    assert again.path == wt.path
    assert head(again.path) == wt.base_sha
    assert not (again.path / "junk.txt").exists()
    assert (again.path / "README.md").read_text() == "The colour of magic.\n"
    # Also when the directory vanished but git still has it registered.
    shutil.rmtree(again.path)
    third = await prepare(ws, git_repo, "s1")
    assert head(third.path) == wt.base_sha
    listed = git("worktree", "list", "--porcelain", cwd=third.mirror)
    assert listed.count(str(third.path)) == 1


# --- commit ----------------------------------------------------------------------------------


def _hook(path: Path, marker_dir: Path, name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ntouch '{marker_dir / name}'\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


HOOKS = (
    "pre-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "post-checkout",
    "reference-transaction",
    "pre-push",
    "post-index-change",
)


@pytest.mark.parametrize("where", ["mirror-hooks-dir", "tracked-hooks-path"])
async def test_hooks_the_agent_wrote_never_run(
    ws: Workspace, git_repo: GitRepo, tmp_path: Path, where: str
) -> None:
    ran = tmp_path / "ran"
    ran.mkdir()
    wt = await prepare(ws, git_repo, "s1")
    if where == "mirror-hooks-dir":
        for name in HOOKS:
            _hook(wt.mirror / "hooks" / name, ran, name)
    else:
        for name in HOOKS:
            _hook(wt.path / ".githooks" / name, ran, name)
        git("config", "core.hooksPath", ".githooks", cwd=wt.mirror)
    # The hooks are in place for the next prepare (post-checkout) as much as for the commit.
    wt = await prepare(ws, git_repo, "s1") if where == "mirror-hooks-dir" else wt
    (wt.path / "README.md").write_text("The color of magic.\n")
    sha = await ws.commit(wt, MESSAGE, date=DATE)
    assert sha is not None
    assert await ws.push(wt, sha) is True
    assert sorted(p.name for p in ran.iterdir()) == []
    assert remote_sha(git_repo, wt.branch) == sha
    assert git("log", "-1", "--format=%s", sha, cwd=wt.path) == "Rename colour"


async def test_config_commands_the_agent_wrote_never_run(
    ws: Workspace, git_repo: GitRepo, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    ran.mkdir()
    wt = await prepare(ws, git_repo, "s1")
    for key in ("core.fsmonitor", "diff.external"):
        _hook(tmp_path / key, ran, key)
        git("config", key, str(tmp_path / key), cwd=wt.mirror)
    (wt.path / "README.md").write_text("The color of magic.\n")
    sha = await ws.commit(wt, MESSAGE, date=DATE)
    assert sha is not None
    assert await ws.diff_stats(wt) == DiffStats(files_changed=1, insertions=1, deletions=1)
    assert "+The color of magic." in await ws.diff(wt)
    assert await ws.push(wt, sha) is True
    assert sorted(p.name for p in ran.iterdir()) == []


async def test_commit_is_deterministic(ws: Workspace, git_repo: GitRepo) -> None:
    shas = []
    for session_id in ("one", "two"):
        wt = await prepare(ws, git_repo, session_id)
        (wt.path / "README.md").write_text("The color of magic.\n")
        (wt.path / "new.txt").write_text("new\n")
        shas.append(await ws.commit(wt, MESSAGE, date=DATE))
    assert shas[0] is not None
    assert shas[0] == shas[1]
    author = git("log", "-1", "--format=%an <%ae> %at %cn %ct", shas[0], cwd=wt.path)
    assert author == f"TeleCoder <telecoder@localhost> {int(DATE)} TeleCoder {int(DATE)}"
    assert git("log", "-1", "--format=%B", shas[0], cwd=wt.path) == MESSAGE.strip()
    # A different date is a different commit.
    wt = await prepare(ws, git_repo, "three")
    (wt.path / "README.md").write_text("The color of magic.\n")
    (wt.path / "new.txt").write_text("new\n")
    assert await ws.commit(wt, MESSAGE, date=DATE + 1) != shas[0]


async def test_commit_without_changes_is_none(ws: Workspace, git_repo: GitRepo) -> None:
    wt = await prepare(ws, git_repo, "s1")
    assert await ws.commit(wt, MESSAGE, date=DATE) is None
    (wt.path / "README.md").write_text("changed and\n")
    (wt.path / "README.md").write_text("The colour of magic.\n")  # changed back
    assert await ws.commit(wt, MESSAGE, date=DATE) is None
    assert head(wt.path) == wt.base_sha


async def test_commit_keeps_a_commit_the_agent_made(ws: Workspace, git_repo: GitRepo) -> None:
    wt = await prepare(ws, git_repo, "s1")
    (wt.path / "README.md").write_text("agent\n")
    git("commit", "-q", "-am", "the agent's own commit", cwd=wt.path)
    agent_sha = head(wt.path)
    assert await ws.commit(wt, MESSAGE, date=DATE) == agent_sha


async def test_diff_stats(ws: Workspace, git_repo: GitRepo) -> None:
    wt = await prepare(ws, git_repo, "s1")
    (wt.path / "README.md").write_text("The color of magic.\nA second line.\n")
    (wt.path / "added.txt").write_text("a\nb\nc\n")
    (wt.path / "blob.bin").write_bytes(bytes(range(256)))
    assert await ws.commit(wt, MESSAGE, date=DATE) is not None
    assert await ws.diff_stats(wt) == DiffStats(files_changed=3, insertions=5, deletions=1)
    assert "+The color of magic." in await ws.diff(wt)


# --- push ------------------------------------------------------------------------------------


async def test_push_is_skipped_when_the_remote_has_the_commit(
    ws: Workspace, git_repo: GitRepo
) -> None:
    wt = await prepare(ws, git_repo, "s1")
    (wt.path / "README.md").write_text("The color of magic.\n")
    sha = await ws.commit(wt, MESSAGE, date=DATE)
    assert sha is not None
    assert await ws.push(wt, sha) is True
    assert remote_sha(git_repo, "telecoder/s1") == sha
    assert await ws.push(wt, sha) is False
    # A later attempt redoing the work makes the same commit: nothing to push either.
    again = await prepare(ws, git_repo, "s1")
    (again.path / "README.md").write_text("The color of magic.\n")
    assert await ws.commit(again, MESSAGE, date=DATE) == sha
    assert await ws.push(again, sha) is False
    assert git_repo.remote_git("rev-list", "--count", "main..telecoder/s1") == "1"


async def test_push_never_takes_the_url_as_an_option(
    ws: Workspace, git_repo: GitRepo, tmp_path: Path
) -> None:
    wt = await prepare(ws, git_repo, "s1")
    (wt.path / "README.md").write_text("The color of magic.\n")
    sha = await ws.commit(wt, MESSAGE, date=DATE)
    assert sha is not None
    url, marker = injected(tmp_path)
    with pytest.raises(WorkspaceError):
        await ws.push(replace(wt, remote_url=url), sha)
    assert not marker.exists()


async def test_push_replaces_what_the_remote_had(ws: Workspace, git_repo: GitRepo) -> None:
    stale = commit_on_remote(git_repo, "telecoder/s1", "OLD", "an earlier attempt\n")
    wt = await prepare(ws, git_repo, "s1")
    (wt.path / "README.md").write_text("The color of magic.\n")
    sha = await ws.commit(wt, MESSAGE, date=DATE)
    assert sha is not None
    assert sha != stale
    assert await ws.push(wt, sha) is True
    assert remote_sha(git_repo, "telecoder/s1") == sha


FAKE_SSH = """#!/bin/sh
# A stand-in for ssh: runs the requested git service on the local repository. The first
# receive-pack is preceded by someone else moving the branch (after our ls-remote looked).
for last; do :; done
case "$last" in
  git-receive-pack*)
    if [ ! -e '{flag}' ]; then
      touch '{flag}'
      git --git-dir='{remote}' update-ref '{ref}' '{moved_to}'
    fi ;;
esac
exec sh -c "git ${{last#git-}}"
"""


async def test_push_does_not_clobber_a_branch_moved_meanwhile(
    ws: Workspace, git_repo: GitRepo, tmp_path: Path
) -> None:
    ref = "refs/heads/telecoder/s1"
    before = commit_on_remote(git_repo, "telecoder/s1", "THEIRS1", "1\n")
    moved = commit_on_remote(git_repo, "someone-else", "THEIRS2", "2\n")
    ssh = tmp_path / "fake-ssh"
    ssh.write_text(
        FAKE_SSH.format(flag=tmp_path / "moved", remote=git_repo.remote, ref=ref, moved_to=moved)
    )
    ssh.chmod(0o755)
    env = {"GIT_SSH_COMMAND": str(ssh), "GIT_SSH_VARIANT": "simple"}
    url = f"ssh://fakehost{git_repo.remote}"
    source = await ws.resolve(url)
    wt = await ws.prepare("s1", source, branch="telecoder/s1", base="main", env=env)
    (wt.path / "README.md").write_text("The color of magic.\n")
    sha = await ws.commit(wt, MESSAGE, date=DATE)
    assert sha is not None
    assert remote_sha(git_repo, "telecoder/s1") == before
    with pytest.raises(PushRejected):
        await ws.push(wt, sha, env=env)
    assert (tmp_path / "moved").exists()
    assert remote_sha(git_repo, "telecoder/s1") == moved  # not clobbered
    # Seen afresh, the lease is right: the push goes through.
    assert await ws.push(wt, sha, env=env) is True
    assert remote_sha(git_repo, "telecoder/s1") == sha


# --- the user's checkout ---------------------------------------------------------------------


@dataclass
class CheckoutState:
    head: str
    symbolic: str
    index: bytes
    index_mtime: int
    uncommitted: str
    untracked: str
    refs: str


def snapshot(repo: GitRepo) -> CheckoutState:
    index = repo.path / ".git" / "index"
    return CheckoutState(
        head=(repo.path / ".git" / "HEAD").read_text(),
        symbolic=git("rev-parse", "HEAD", cwd=repo.path),
        index=index.read_bytes(),
        index_mtime=index.stat().st_mtime_ns,
        uncommitted=(repo.path / "README.md").read_text(),
        untracked=(repo.path / "scratch.txt").read_text(),
        refs=git("for-each-ref", cwd=repo.path),
    )


async def _full_run(ws: Workspace, repo: GitRepo, session_id: str) -> Worktree:
    source = await ws.resolve(str(repo.path))
    assert await ws.dirty(source) is True
    await ws.check_base(source, "main")
    wt = await ws.prepare(session_id, source, branch=f"telecoder/{session_id}", base=None)
    (wt.path / "README.md").write_text("The color of magic.\n")
    sha = await ws.commit(wt, MESSAGE, date=DATE)
    assert sha is not None
    assert await ws.push(wt, sha) is True
    await ws.remove(wt)
    return wt


def _dirty(repo: GitRepo) -> None:
    (repo.path / "README.md").write_text("The colour of magic, edited by the user.\n")
    (repo.path / "scratch.txt").write_text("untracked notes\n")
    repo.git("add", "--intent-to-add", "scratch.txt")


async def test_the_users_checkout_is_untouched(ws: Workspace, git_repo: GitRepo) -> None:
    _dirty(git_repo)
    before = snapshot(git_repo)
    wt = await _full_run(ws, git_repo, "s1")
    assert snapshot(git_repo) == before
    assert remote_sha(git_repo, wt.branch) is not None
    assert not wt.path.exists()


async def test_a_checkout_without_remote_only_gains_the_branch(
    ws: Workspace, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path, "solo")
    repo.git("remote", "remove", "origin")
    _dirty(repo)
    before = snapshot(repo)
    wt = await _full_run(ws, repo, "s1")
    after = snapshot(repo)
    assert after.head == before.head
    assert after.symbolic == before.symbolic
    assert (after.index, after.index_mtime) == (before.index, before.index_mtime)
    assert (after.uncommitted, after.untracked) == (before.uncommitted, before.untracked)
    assert repo.git("rev-parse", "--verify", "-q", wt.branch) != ""
    assert repo.git("show", f"{wt.branch}:README.md") == "The color of magic."


# --- cleaning up -----------------------------------------------------------------------------


async def test_remove_and_prune(ws: Workspace, git_repo: GitRepo) -> None:
    old = await prepare(ws, git_repo, "old")
    recent = await prepare(ws, git_repo, "recent")
    gone = await prepare(ws, git_repo, "gone")
    await Workspace(mirrors=ws.mirrors, worktrees=ws.worktrees, pool_size=0).remove(gone)
    assert not gone.path.exists()
    for wt in (old, recent):
        ws.mark_finished(wt)
    (ws.worktrees / "old.done").write_text(str(time.time() - 7200))
    assert await ws.prune(older_than=3600) == ["old"]
    assert not old.path.exists()
    assert not (ws.worktrees / "old.done").exists()
    assert recent.path.exists()
    listed = git("worktree", "list", "--porcelain", cwd=old.mirror)
    assert str(old.path) not in listed
    assert str(gone.path) not in listed
    assert str(recent.path) in listed
    assert await ws.prune(older_than=3600) == []
    assert await ws.prune(older_than=0) == ["recent"]
    assert not recent.path.exists()
    assert str(recent.path) not in git("worktree", "list", "--porcelain", cwd=old.mirror)


async def test_a_pooled_worktree_keeps_nothing_of_the_last_agent(
    ws: Workspace, git_repo: GitRepo, tmp_path: Path
) -> None:
    first = await prepare(ws, git_repo, "s1-1")
    (first.path / "README.md").write_text("changed by the last agent\n")
    (first.path / ".gitignore").write_text("*.log\n")
    git("add", ".gitignore", cwd=first.path)
    git("commit", "-q", "-m", "the last agent's commit", cwd=first.path)
    (first.path / "build.log").write_text("ignored leftovers\n")
    (first.path / "deep" / "er").mkdir(parents=True)
    (first.path / "deep" / "er" / "untracked.txt").write_text("x\n")
    git("add", "deep", cwd=first.path)  # staged, never committed
    await ws.remove(first)
    assert not first.path.exists()
    ran = tmp_path / "ran"
    ran.mkdir()
    _hook(tmp_path / "fsmonitor", ran, "fsmonitor")
    git("config", "core.fsmonitor", str(tmp_path / "fsmonitor"), cwd=first.mirror)

    second = await prepare(ws, git_repo, "s2-1")
    assert list(ran.iterdir()) == []  # before this test's own git commands read the config
    # prepare rewrote the mirror's config: the agent's fsmonitor is gone.
    assert "fsmonitor" not in (first.mirror / "config").read_text()
    assert head(second.path) == second.base_sha
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=second.path) == "telecoder/s2-1"
    assert git("status", "--porcelain", "--ignored", cwd=second.path) == ""
    assert sorted(p.name for p in second.path.iterdir()) == [".git", "README.md"]
    assert (second.path / "README.md").read_text() == "The colour of magic.\n"
    # The first session's branch is free again: a retry of it can have it back.
    again = await prepare(ws, git_repo, "s1-2", branch="telecoder/s1-1")
    assert head(again.path) == again.base_sha


async def test_mirror_is_shared_and_reused(ws: Workspace, git_repo: GitRepo) -> None:
    a = await prepare(ws, git_repo, "a")
    b = await prepare(ws, git_repo, "b")
    assert a.mirror == b.mirror
    assert [p.name for p in ws.mirrors.iterdir() if p.suffix == ".git"] == [a.mirror.name]
    other = make_repo(git_repo.path.parent, "other")
    c = await prepare(ws, other, "c")
    assert c.mirror != a.mirror
    assert os.path.isdir(c.mirror)
