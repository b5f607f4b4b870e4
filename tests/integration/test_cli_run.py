"""`telecoder run` end to end: a real git repo, a bare remote, the CLI as a subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli import TELECODER, cli_env, telecoder
from tests.conftest import GitRepo, git, shared_bits


def checkout_state(repo: GitRepo) -> dict[str, object]:
    index = repo.path / ".git" / "index"
    return {
        "head": repo.git("rev-parse", "HEAD"),
        "branch": repo.git("rev-parse", "--abbrev-ref", "HEAD"),
        "index": index.read_bytes(),
        "index_mtime": index.stat().st_mtime_ns,
        "status": repo.git("--no-optional-locks", "status", "--porcelain"),
        "wip": (repo.path / "wip.txt").read_text(),
        "readme": (repo.path / "README.md").read_text(),
        "branches": repo.git("branch", "--list"),
    }


def test_run_pushes_one_commit_and_leaves_the_checkout_alone(git_repo: GitRepo, home: Path):
    # The user has work in progress: an uncommitted file and a staged edit.
    (git_repo.path / "wip.txt").write_text("half-done thought\n")
    (git_repo.path / "README.md").write_text("The colour of magic.\nlocal edit\n")
    git_repo.git("add", "README.md")
    before = checkout_state(git_repo)

    done = telecoder(
        "run", "sed -i 's/colour/color/g' README.md", "--repo", str(git_repo.path),
        "--engine", "shell", "--json", env=cli_env(home),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["status"] == "succeeded"
    branch = f"telecoder/{session['id']}"
    assert session["branch"] == branch
    result = session["result"]
    assert result["type"] == "branch"
    assert result["branch"] == branch
    assert (result["files_changed"], result["insertions"], result["deletions"]) == (1, 1, 1)
    # The remote has the branch with exactly one new commit, holding the edit.
    commits = git_repo.remote_git("rev-list", f"main..{branch}").splitlines()
    assert commits == [result["commit"]]
    assert git_repo.remote_git("show", f"{branch}:README.md") == "The color of magic."
    assert git_repo.remote_git("diff", "--name-only", "main", branch) == "README.md"
    # The user's checkout is exactly as it was.
    assert checkout_state(git_repo) == before
    assert "uncommitted changes" in done.stderr  # and the user was told


def test_no_change_is_an_answer(git_repo: GitRepo, home: Path):
    done = telecoder(
        "run", "echo the answer is 42", "--repo", str(git_repo.path), "--json",
        env=cli_env(home),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["result"]["type"] == "text"
    assert session["result"]["text"] == "the answer is 42"
    assert git_repo.remote_git("branch", "--list", "telecoder/*") == ""


def test_failed_command_exits_1_with_reason(git_repo: GitRepo, home: Path):
    done = telecoder(
        "run", "echo doomed >&2; exit 3", "--repo", str(git_repo.path), "--json",
        env=cli_env(home),
    )  # fmt: skip
    assert done.returncode == 1
    session = json.loads(done.stdout)
    assert session["status"] == "failed"
    assert session["failure_kind"] == "engine_error"
    assert "status 3" in session["error"]
    assert "doomed" in session["error"]


def test_live_progress_ends_with_the_branch(git_repo: GitRepo, home: Path):
    done = telecoder(
        "run", "echo hello > hello.txt", "--repo", str(git_repo.path), env=cli_env(home)
    )
    assert done.returncode == 0, done.stderr
    assert "preparing workspace" in done.stdout
    assert "pushed" in done.stdout
    session_id = done.stderr.split("session ", 1)[1].split()[0]
    assert f"telecoder/{session_id}" in done.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "", "--repo", "{repo}"], "the prompt is empty"),
        (["run", "   ", "--repo", "{repo}"], "the prompt is empty"),
        (["run", "true", "--repo", "{missing}"], "does not exist"),
        (["run", "true", "--repo", "{plain}"], "is not a git repository"),
        (["run", "true", "--repo", "{file}"], "is not a git repository"),
        (["run", "true", "--repo=--upload-pack=touch@x:y"], "starts with '-'"),
        (["run", "true", "--repo", "{repo}", "--base=-x"], "starts with '-'"),
        (["run", "true", "--repo", "{repo}", "--engine", "nope"], "unknown engine 'nope'"),
        (["run", "true", "--repo", "{repo}", "--base", "no-such"], "base ref 'no-such'"),
        (["run", "true", "--repo", "{repo}", "--forge", "gitlab"], "unknown forge 'gitlab'"),
        (["run", "true"], "Missing option '--repo'"),
        (["list", "--status", "bogus"], "unknown status 'bogus'"),
    ],
)
def test_bad_input_exits_2_and_queues_nothing(
    git_repo: GitRepo, home: Path, tmp_path: Path, args: list[str], message: str
):
    plain = tmp_path / "plain"
    plain.mkdir()
    (tmp_path / "file.txt").write_text("not a repository\n")
    values = {"repo": str(git_repo.path), "missing": str(tmp_path / "nope"), "plain": str(plain)}
    values["file"] = str(tmp_path / "file.txt")
    done = telecoder(*[a.format(**values) for a in args], env=cli_env(home))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    listed = telecoder("list", "--json", env=cli_env(home))
    assert json.loads(listed.stdout) == {"sessions": [], "next_cursor": None}


def test_show_and_cancel_unknown_or_finished(git_repo: GitRepo, home: Path):
    env = cli_env(home)
    assert telecoder("show", "nosuchsession", env=env).returncode == 3
    done = telecoder("run", "true", "--repo", str(git_repo.path), "--json", env=env)
    session_id = json.loads(done.stdout)["id"]
    cancel = telecoder("cancel", session_id, env=env)
    assert cancel.returncode == 4
    assert "already succeeded" in cancel.stderr


def test_detach_then_list_show_and_cancel_while_queued(git_repo: GitRepo, home: Path):
    env = cli_env(home)
    done = telecoder("run", "true", "--repo", str(git_repo.path), "--detach", env=env)
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.strip()
    listed = json.loads(telecoder("list", "--json", "--status", "queued", env=env).stdout)[
        "sessions"
    ]
    assert [s["id"] for s in listed] == [session_id]
    assert json.loads(telecoder("list", "--json", "--repo", str(git_repo.path), env=env).stdout)[
        "sessions"
    ]
    cancel = telecoder("cancel", session_id[:6], env=env)
    assert cancel.returncode == 0, cancel.stderr
    shown = json.loads(telecoder("show", session_id, "--json", env=env).stdout)
    assert shown["status"] == "cancelled"
    logs = telecoder("logs", session_id, "--json", env=env)
    kinds = [json.loads(line)["data"].get("status") for line in logs.stdout.splitlines()]
    assert kinds == ["queued", "cancelled"]


def test_text_is_printed_as_written_not_as_emoji(git_repo: GitRepo, home: Path):
    env = cli_env(home)
    prompt = "echo ':memo: :smile:' > note.txt"
    done = telecoder("run", prompt, "--repo", str(git_repo.path), "--detach", env=env)
    assert done.returncode == 0, done.stderr
    shown = telecoder("show", done.stdout.strip(), env=env)
    assert shown.returncode == 0, shown.stderr
    assert ":memo: :smile:" in shown.stdout
    assert "\N{MEMO}" not in shown.stdout


def test_retry_reuses_the_branch(git_repo: GitRepo, home: Path):
    env = cli_env(home)
    first = json.loads(
        telecoder(
            "run", "echo one >> notes.txt", "--repo", str(git_repo.path), "--json", env=env
        ).stdout
    )
    again = telecoder("retry", first["id"], "--json", env=env)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["id"] != first["id"]
    assert second["parent_id"] == first["id"]
    assert second["branch"] == first["branch"]
    assert second["status"] == "succeeded"
    # Same task, same base: the branch still holds exactly one commit.
    assert len(git_repo.remote_git("rev-list", f"main..{first['branch']}").splitlines()) == 1


def test_url_repo(git_repo: GitRepo, home: Path):
    url = f"file://{git_repo.remote}"
    done = telecoder("run", "touch new.txt", "--repo", url, "--json", env=cli_env(home))
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["repo"] == url
    assert git("ls-tree", "--name-only", session["branch"], cwd=git_repo.remote).splitlines() == [
        "README.md",
        "new.txt",
    ]


def test_logs_raw_prints_every_line_the_agent_printed(git_repo: GitRepo, home: Path):
    env = cli_env(home)
    done = telecoder(
        "run", 'echo \'{"type":"unmapped"}\'; echo warning >&2', "--repo", str(git_repo.path),
        "--engine", "shell", "--json", env=env,
    )  # fmt: skip
    session_id = json.loads(done.stdout)["id"]
    raw = telecoder("logs", session_id[:6], "--raw", env=env)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.splitlines() == [
        "── attempt 1, run 1 ──",
        '{"type":"unmapped"}',
        "[stderr] warning",
    ]
    missing = telecoder("logs", session_id, "--raw", "--attempt", "2", env=env)
    assert missing.returncode == 3
    assert f"no raw log of attempt 2 of session {session_id} on this host" in missing.stderr
    remote = telecoder("logs", session_id, "--raw", "--server", "http://127.0.0.1:9", env=env)
    assert remote.returncode == 8
    assert "raw logs stay on the worker host" in remote.stderr
    off = cli_env(home, TELECODER_RAW_LOG_DAYS="0")
    again = telecoder(
        "run", "echo hi", "--repo", str(git_repo.path), "--engine", "shell", "--json", env=off
    )
    assert json.loads(again.stdout)["status"] == "succeeded"
    assert telecoder("logs", json.loads(again.stdout)["id"], "--raw", env=off).returncode == 3


def test_arguments_that_are_not_utf8_exit_2(git_repo: GitRepo, home: Path):
    """Bytes that are not UTF-8 (``$'\\xff'`` in a shell) are bad input, not a traceback."""
    done = subprocess.run(
        [TELECODER, "run", b"fix \xff it", "--repo", str(git_repo.path), "--engine", "shell"],
        env=cli_env(home),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    stderr = done.stderr.decode()
    assert "argument 2 is not valid UTF-8: fix \\xff it" in stderr
    assert "Traceback" not in stderr
    assert json.loads(telecoder("list", "--json", env=cli_env(home)).stdout)["sessions"] == []


def test_base_may_be_a_full_ref_name(git_repo: GitRepo, home: Path):
    """``refs/heads/X`` is the branch X; ``refs/tags/X`` is the tag X even beside a branch X."""
    env = cli_env(home)
    tagged = git_repo.git("rev-parse", "HEAD")
    git_repo.git("tag", "v1")
    (git_repo.path / "later.txt").write_text("after the tag\n")
    git_repo.git("add", "later.txt")
    git_repo.git("commit", "-q", "-m", "later")
    git_repo.git("push", "-q", "origin", "main", "v1", "main:refs/heads/v1")

    by_branch = telecoder(
        "run", "touch a.txt", "--repo", str(git_repo.path), "--base", "refs/heads/main",
        "--engine", "shell", "--json", env=env,
    )  # fmt: skip
    by_tag = telecoder(
        "run", "touch b.txt", "--repo", str(git_repo.path), "--base", "refs/tags/v1",
        "--engine", "shell", "--json", env=env,
    )  # fmt: skip

    assert by_branch.returncode == 0, by_branch.stderr
    branch_session = json.loads(by_branch.stdout)
    assert branch_session["base"] == "main"
    assert git_repo.remote_git("rev-parse", f"{branch_session['branch']}^") == git_repo.git(
        "rev-parse", "main"
    )
    assert by_tag.returncode == 0, by_tag.stderr
    tag_session = json.loads(by_tag.stdout)
    assert git_repo.remote_git("rev-parse", f"{tag_session['branch']}^") == tagged


def test_the_home_and_everything_in_it_is_for_its_user_alone(git_repo: GitRepo, tmp_path: Path):
    """Prompts, code, logs and the database: no file or directory grants group or others."""
    home = tmp_path / "fresh" / "home"  # TeleCoder makes it
    env = cli_env(home)
    done = telecoder(
        "run", "echo secret > notes.txt; echo done", "--repo", str(git_repo.path),
        "--engine", "shell", "--json", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = {p.relative_to(home).parts[0] for p in home.rglob("*")}
    assert {"telecoder.db", "mirrors", "worktrees", "logs", "engines"} <= made, made
    # Inside a mirror, objects are readable by others: sandboxes read them through alternates
    # as a uid of their own. The home and its mirrors directory keep everyone else out.
    shared = shared_bits(tmp_path / "fresh")
    inside_a_mirror = {p for p in shared if p.startswith("home/mirrors/") and p.count("/") >= 2}
    assert inside_a_mirror
    # The agents' inbox tool is a public script (no secret in it), readable by sandbox uids.
    tools = {p: mode for p, mode in shared.items() if p.startswith("home/tools")}
    assert tools == {"home/tools": "0o755", "home/tools/telecoder-inbox": "0o755"}
    assert (home / "tools" / "telecoder-inbox").read_text().startswith("#!")
    others = {p: mode for p, mode in shared.items() if p not in inside_a_mirror and p not in tools}
    assert others == {}
