"""Plan files: what a valid plan gives, and the messages that name what is wrong."""

from __future__ import annotations

import pytest

from telecoder import plans
from telecoder.domain import After
from telecoder.errors import BadInput

PLAN = """
name: two
repo: ./a
tasks:
  - id: one
    prompt: "  do it  "
  - id: two
    prompt: then this
    repo: ./b
    engine: shell
    depends_on: [one]
    after_any: [one]
"""


def test_a_plan_keeps_its_tasks_defaults_and_edges():
    plan = plans.load(PLAN)
    assert plan.name == "two"
    assert [t.id for t in plan.tasks] == ["one", "two"]
    assert plan.tasks[0].prompt == "do it"
    assert (plan.tasks[0].repo, plan.tasks[1].repo) == (None, "./b")
    assert plan.tasks[1].waits() == [("one", After.SUCCESS), ("one", After.ANY)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tasks: [", "not valid YAML: while parsing"),
        ("- a\n- b\n", "expected a mapping with 'tasks:'"),
        ("tasks: []\n", "tasks List should have at least 1 item"),
        ("tasks:\n  - {id: 'a b', prompt: x, repo: r}\n", "task 'a b': id String should match"),
        ("tasks:\n  - {id: a, prompt: x}\n", "task 'a' names no repo"),
        ("tasks:\n  - {prompt: x, repo: r}\n", "task 1: id is required"),
        ('repo: r\ntasks:\n  - {id: a, prompt: "x\\0"}\n', "task 'a': prompt Value error"),
        ("repo: r\nsteps: []\ntasks:\n  - {id: a, prompt: x}\n", "steps is not a known field"),
    ],
)
def test_a_bad_plan_says_what_is_wrong(text: str, message: str):
    with pytest.raises(BadInput) as caught:
        plans.load(text, source="p.yaml")
    assert caught.value.message.startswith("p.yaml: ")
    assert message in caught.value.message
