"""Follow-up prompts of a chain: the rules in ``.telecoder.yml`` and their safe rendering."""

from __future__ import annotations

import pytest

from telecoder import followups, repoconfig
from telecoder.errors import BadInput


def test_rules_take_plain_prompts_or_mappings_and_are_kept_with_the_depth_limit() -> None:
    config = repoconfig.parse(
        "on_success:\n  - prompt: Test {{ session.branch }}\n"
        "    engine: codex\n    repo: acme/docs\n"
        "on_failure: Explain {{ session.error }}\n"
    )
    assert config.follow_ups(3) == {
        "max_depth": 3,
        "on_success": [
            {"prompt": "Test {{ session.branch }}", "engine": "codex", "repo": "acme/docs"}
        ],
        "on_failure": [{"prompt": "Explain {{ session.error }}"}],
    }
    assert repoconfig.parse("engine: shell\n").follow_ups(3) is None


@pytest.mark.parametrize(
    "text",
    [
        'on_success: ["{{ session.secret }}"]',
        'on_failure: ["{{ result.text.upper() }}"]',
        "on_success: [{prompt: x, colour: red}]",
        "on_success: [{engine: shell}]",
        "on_success: ['']",
    ],
)
def test_bad_rules_are_the_repositorys_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="on_"):
        repoconfig.parse(text)


def test_rendering_is_one_pass_of_plain_substitution() -> None:
    values = {"session.id": "s1", "result.text": "{{ session.id }} and {% raw %}"}
    rendered = followups.render("{{session.id}}: {{ result.text }} {{ other }}", values)
    assert rendered == "s1: {{ session.id }} and {% raw %} {{ other }}"


def test_the_same_prompt_for_the_same_repository_hashes_alike() -> None:
    assert followups.prompt_hash("r", "fix it\n") == followups.prompt_hash("r", "  fix it")
    assert followups.prompt_hash("r", "fix it") != followups.prompt_hash("s", "fix it")
