"""How an estimate picks the sessions it rests on: similar prompts, narrowest pool first."""

from __future__ import annotations

from telecoder.domain import SessionStatus
from telecoder.estimate import MAX_BASIS, choose, estimate_from, similar, words
from telecoder.store.costs import Past


def past(prompt: str, cost: float, engine: str = "codex", model: str | None = None, n: int = 0):
    return Past(
        session_id=f"s{n:04d}",
        engine=engine,
        model=model,
        prompt=prompt,
        status=SessionStatus.SUCCEEDED,
        cost_usd=cost,
        input_tokens=1000,
        output_tokens=100,
        created_at=1000.0 - n,
    )


def test_words_leave_out_short_and_common_ones():
    assert words("Fix the flaky test in api/login.py, please") == {
        "fix",
        "flaky",
        "test",
        "api",
        "login",
    }


def test_similar_prompts_share_words_or_a_word_and_a_length():
    assert similar("fix the flaky login test", "the flaky test in login")
    assert not similar("fix the flaky login test", "write the release notes")
    # One shared word of many: only when the prompts are about as long.
    long = "bump the dependency versions in the lock file and rerun the whole suite"
    assert similar("bump all versions of everything everywhere today ok", long)
    many = "bump " + " ".join(f"word{i}" for i in range(20))
    assert not similar(many, "bump versions")


def test_the_narrowest_pool_with_enough_similar_sessions_wins():
    history = [
        past("fix the flaky login test", 1.0, model="gpt-5", n=1),
        past("fix the flaky login test", 2.0, n=2),
        past("fix the flaky login test", 3.0, n=3),
        past("fix the flaky login test", 4.0, n=4),
        past("write docs", 9.0, n=5),
    ]
    chosen, basis = choose(history, engine="codex", model=None, prompt="flaky login test")
    assert basis == "same engine and model, similar prompts"
    assert [p.cost_usd for p in chosen] == [2.0, 3.0, 4.0]
    chosen, basis = choose(history, engine="codex", model="gpt-5", prompt="flaky login test")
    assert basis == "same engine, similar prompts"
    assert len(chosen) == 4


def test_without_similar_sessions_the_narrowest_non_empty_pool_is_used_and_said():
    history = [past("write docs", 1.0, n=1), past("write more docs", 3.0, engine="aider", n=2)]
    est = estimate_from(history, repo="/r", engine="aider", model=None, prompt="fix the build")
    assert (est.based_on, est.median_usd) == (1, 3.0)
    assert est.basis == "same engine and model, any prompt (too few similar ones)"


def test_median_range_and_at_most_the_latest_sessions():
    history = [past("fix the flaky test", float(n), n=n) for n in range(MAX_BASIS + 20)]
    est = estimate_from(history, repo="/r", engine="codex", model=None, prompt="fix flaky test")
    assert est.based_on == MAX_BASIS
    assert (est.low_usd, est.high_usd, est.median_usd) == (0.0, 49.0, 24.5)
    assert est.median_tokens == 1100
    assert est.sessions[0] == "s0000"


def test_no_history():
    est = estimate_from([], repo="/r", engine="codex", model="m", prompt="x")
    assert est.to_dict() == {
        "repo": "/r",
        "engine": "codex",
        "model": "m",
        "based_on": 0,
        "basis": "no history",
        "median_usd": None,
        "low_usd": None,
        "high_usd": None,
        "median_tokens": None,
        "sessions": [],
    }
