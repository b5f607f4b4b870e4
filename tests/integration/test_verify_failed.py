"""A session whose checks fail says which tests failed, with their output and no terminal
escapes, and keeps the agent's work as a patch (API and dashboard) though nothing is pushed."""

from __future__ import annotations

from pathlib import Path

from telecoder.assemble import build_worker
from telecoder.domain import EventKind, FailureKind
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.verify import CheckReport, failing_tests, revision_prompt, strip_ansi
from tests.conftest import make_repo
from tests.integration.test_engine_shell import all_events, execute, request, tuned
from tests.server import client

# What `pytest` prints with colours forced on (as in many repositories' addopts).
PYTEST_OUTPUT = r"""printf '\033[1m============ FAILURES ============\033[0m\n'
printf '\033[31m\033[1m___ test_naturaldelta ___\033[0m\n'
printf 'E       assert "a moment" == "now"\n'
printf '\033[31mFAILED\033[0m tests/test_time.py::test_naturaldelta - AssertionError\n'
printf '\033[31mFAILED\033[0m tests/test_time.py::test_precisedelta[1] - assert 2 == 3\n'
printf '\033[31m========= \033[31m\033[1m2 failed\033[0m, '
printf '\033[32m40 passed\033[0m in 0.31s =========\033[0m\n'
exit 1
"""


async def test_failed_checks_name_the_tests_and_keep_the_work(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = make_repo(
        tmp_path,
        files={
            "README.md": "hello\n",
            "check.sh": PYTEST_OUTPUT,
            ".telecoder.yml": "verify:\n  - sh check.sh\n",
        },
    )
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, request(repo, "echo 'the agent was here' > work.txt"))
    assert done.failure_kind == FailureKind.VERIFY_FAILED
    error = done.error or ""
    assert "\x1b" not in error
    assert (
        "failing tests: tests/test_time.py::test_naturaldelta, "
        "tests/test_time.py::test_precisedelta[1]"
    ) in error
    assert 'E       assert "a moment" == "now"' in error  # the output, not just the last line
    assert "2 failed, 40 passed in 0.31s" in error
    events = await all_events(store, done.id)
    assert all("\x1b" not in str(e.data) for e in events)
    kept = [e for e in events if e.kind == EventKind.ERROR and "patch" in e.data]
    assert len(kept) == 1
    assert repo.remote_git("branch", "--list", "telecoder/*") == ""  # still nothing pushed

    app = create_app(settings, store)
    async with client(app) as c:
        api = await c.get(f"/api/sessions/{done.id}/diff", params={"attempt": "failed"})
        page = await c.get(f"/sessions/{done.id}/diff", headers={"accept": "text/html"})
        patch = await c.get(f"/sessions/{done.id}/failed.patch")
        wrong = await c.get(f"/api/sessions/{done.id}/diff", params={"attempt": "2"})
    assert api.status_code == 200, api.text
    body = api.json()
    assert body["attempt"] == 1
    assert body["files_changed"] == 1
    assert "+the agent was here" in body["diff"]
    assert "failed.patch" in page.text
    assert "the agent was here" in page.text
    assert patch.status_code == 200
    assert patch.headers["content-type"].startswith("text/x-diff")
    assert patch.text == body["diff"]
    assert wrong.status_code == 422


async def test_a_session_that_passed_has_no_failed_diff(settings: Settings, store: Store, tmp_path):
    repo = make_repo(tmp_path)
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, request(repo, "echo ok > ok.txt"))
    async with client(create_app(settings, store)) as c:
        missing = await c.get(f"/api/sessions/{done.id}/diff", params={"attempt": "failed"})
    assert missing.status_code == 404


def test_the_revision_prompt_names_the_failing_tests_without_escapes():
    tail = strip_ansi("\x1b[31mFAILED\x1b[0m tests/a.py::test_b - boom\n\x1b]0;t\x07x")
    assert tail == "FAILED tests/a.py::test_b - boom\nx"
    report = CheckReport(
        command="pytest", kind="verify", ok=False, exit_code=1, duration_ms=5, output_tail=tail
    )
    prompt = revision_prompt([report])
    assert "Failing tests: tests/a.py::test_b" in prompt
    assert failing_tests("--- FAIL: TestParse (0.00s)\ntest io::reads ... FAILED\n") == [
        "TestParse",
        "io::reads",
    ]
    assert failing_tests("FAIL: test_x (pkg.tests.T)\n  ✕ renders the list (12 ms)\n") == [
        "test_x (pkg.tests.T)",
        "renders the list",
    ]


async def test_the_pushed_failed_ref_is_shown_by_the_api_and_dashboard(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = make_repo(
        tmp_path, files={"README.md": "hello\n", ".telecoder.yml": "verify:\n  - exit 1\n"}
    )
    worker = build_worker(tuned(settings, push_failed=True), store)
    done = await execute(worker, store, request(repo, "echo tried > work.txt"))
    assert done.failure_kind == FailureKind.VERIFY_FAILED
    ref = f"telecoder/{done.id}-failed"
    app = create_app(settings, store)
    async with client(app) as c:
        api = await c.get(f"/api/sessions/{done.id}")
        page = await c.get(f"/sessions/{done.id}", headers={"accept": "text/html"})
    assert api.json()["result"]["failed_ref"] == ref
    assert 'id="failed-ref"' in page.text
    assert f"<code>{ref}</code>" in page.text
    assert repo.remote_git("show", f"{ref}:work.txt") == "tried"
