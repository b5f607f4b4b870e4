"""The outcome's parts from plain data: which checks count, which lines of the agent's final
message say it was unsure, and the comment's form."""

from __future__ import annotations

from telecoder import outcome as outcomes


def test_only_the_checks_of_the_last_revision_that_passed_count() -> None:
    checks = [
        {"command": "make test", "kind": "verify", "ok": False, "revision": 0},
        {"command": "make lint", "kind": "verify", "ok": True, "revision": 0},
        {"command": "make test", "kind": "verify", "ok": True, "revision": 1},
        {"command": "out.txt", "kind": "file_exists", "ok": False, "revision": 1},
    ]
    found = outcomes.summarize(status="succeeded", result={"commit": "c" * 40}, checks=checks)
    assert found["verified"] == [{"command": "make test", "kind": "verify"}]


def test_the_agents_doubts_are_picked_from_its_final_message() -> None:
    text = "Renamed the flag.\n- I could not run the integration tests\nAll good otherwise.\n"
    assert outcomes.unsure_lines(text) == ["I could not run the integration tests"]
    assert outcomes.unsure_lines("Done.\nEverything passes.") == []
    many = "\n".join(f"TODO {i}" for i in range(50))
    assert len(outcomes.unsure_lines(many)) == outcomes.MAX_UNCERTAIN


def test_the_markdown_has_the_four_parts() -> None:
    found = outcomes.summarize(
        status="failed", result=None, error="`make test` exited with status 2"
    )
    text = outcomes.markdown(found)
    assert text.splitlines()[0] == "**Changed:** nothing pushed"
    assert "**Verified:** no checks ran" in text
    assert "**Uncertain:**\n- Error: `make test` exited with status 2" in text
    assert "**Next:** see the session's log" in text


def test_an_answer_is_told_from_work_that_failed() -> None:
    answered = outcomes.summarize(status="succeeded", result={"text": "It is in utils.py."})
    assert answered["changed"] == "nothing: the agent answered without changing the repository"
    failed = outcomes.summarize(status="failed", result=None, error="checks failed")
    assert failed["changed"] == "nothing pushed"
    kept = {"type": "text", "failed_ref": "telecoder/abc-failed"}
    pushed = outcomes.summarize(status="failed", result=kept, error="checks failed")
    assert pushed["changed"] == (
        "nothing merged: the work that failed the checks is on telecoder/abc-failed"
    )
