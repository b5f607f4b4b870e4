"""Plan files: tasks with dependencies in one YAML document (``telecoder run -f plan.yaml``).

```yaml
name: upgrade            # optional: the run's name
repo: ./backend          # optional: the repository of the tasks that name none
engine: claude-code      # optional: the engine of the tasks that name none
tasks:
  - id: schema
    prompt: add the column
  - id: api
    prompt: expose it in the API
    repo: ./api
    depends_on: [schema]   # starts once schema succeeded; skipped if it did not
  - id: report
    prompt: write what changed
    after_any: [api]       # starts once api ended, however
```

``load`` refuses, with a message naming the task and the field, anything wrong: unknown fields,
a task without a prompt or a repository, a duplicate id, a dependency on an unknown task, a
cycle. Each message is a ``BadInput`` (exit 2, HTTP 422): nothing of a bad plan is queued.
"""

from __future__ import annotations

import graphlib
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from telecoder.domain import After
from telecoder.errors import BadInput

TaskId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Strings the database can hold: no NUL, at most the column's length.
Short = Annotated[str, StringConstraints(max_length=200), AfterValidator(_no_nul)]
Ref = Annotated[str, StringConstraints(max_length=255), AfterValidator(_no_nul)]
Repo = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_no_nul)]


Engine = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
MAX_TASKS = 1000


class PlanTask(BaseModel):
    """One task: a session of the run."""

    model_config = ConfigDict(extra="forbid")

    id: TaskId = Field(description="Its name in the plan (letters, digits, _ . -).")
    prompt: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=100_000),
        AfterValidator(_no_nul),
    ] = Field(description="What to do (for the shell engine: the command).")
    repo: Repo | None = Field(default=None, description="Its repository; default the plan's.")
    engine: Engine | None = Field(default=None, description="Its engine; default the plan's.")
    model: Short | None = Field(default=None, description="Its model.")
    base: Ref | None = Field(default=None, description="Branch, tag or commit to start from.")
    depends_on: list[TaskId] = Field(
        default_factory=list, description="Tasks that must succeed first (else it is skipped)."
    )
    after_any: list[TaskId] = Field(
        default_factory=list, description="Tasks that must end first, however they end."
    )

    def waits(self) -> list[tuple[str, After]]:
        return [(i, After.SUCCESS) for i in self.depends_on] + [
            (i, After.ANY) for i in self.after_any
        ]


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Short | None = Field(default=None, description="The run's name.")
    repo: Repo | None = Field(default=None, description="Default repository of its tasks.")
    engine: Engine | None = Field(default=None, description="Default engine of its tasks.")
    tasks: list[PlanTask] = Field(min_length=1, max_length=MAX_TASKS)


def load(text: str, *, source: str = "the plan") -> Plan:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BadInput(f"{source}: not valid YAML: {' '.join(str(e).split())}") from None
    return parse(data, source=source)


def read(path: Path) -> Plan:
    try:
        text = path.read_text()
    except OSError as e:
        raise BadInput(f"cannot read the plan {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"the plan {path} is not UTF-8 text") from None
    return load(text, source=str(path))


def parse(data: Any, *, source: str = "the plan") -> Plan:
    """A plan from its parsed document (YAML here, JSON in the API), checked whole."""
    if not isinstance(data, dict):
        raise BadInput(f"{source}: expected a mapping with 'tasks:', a list of tasks")
    try:
        plan = Plan.model_validate(data)
    except ValidationError as e:
        raise BadInput(f"{source}: {_first(e, data)}") from None
    check(plan, source=source)
    return plan


def check(plan: Plan, *, source: str = "the plan") -> None:
    seen: set[str] = set()
    for task in plan.tasks:
        if task.id in seen:
            raise BadInput(f"{source}: task {task.id!r} appears twice (ids must be unique)")
        seen.add(task.id)
    for task in plan.tasks:
        if not (task.repo or plan.repo):
            raise BadInput(f"{source}: task {task.id!r} names no repo (and the plan has no repo:)")
        for field, ids in (("depends_on", task.depends_on), ("after_any", task.after_any)):
            for other in ids:
                if other not in seen:
                    raise BadInput(
                        f"{source}: task {task.id!r}: {field} names an unknown task {other!r}"
                    )
                if other == task.id:
                    raise BadInput(f"{source}: task {task.id!r}: {field} names the task itself")
    graph = {t.id: {i for i, _ in t.waits()} for t in plan.tasks}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        cycle = " → ".join(e.args[1])
        raise BadInput(f"{source}: the tasks' dependencies form a cycle: {cycle}") from None


def _first(error: ValidationError, data: dict[str, Any]) -> str:
    """The first problem, with the task it is in named by its id where it has one."""
    problem = error.errors()[0]
    where = list(problem["loc"])
    words: list[str] = []
    if len(where) >= 2 and where[0] == "tasks" and isinstance(where[1], int):
        index = where[1]
        tasks = data.get("tasks")
        task = tasks[index] if isinstance(tasks, list) and index < len(tasks) else None
        name = task.get("id") if isinstance(task, dict) else None
        words.append(f"task {name!r}" if isinstance(name, str) else f"task {index + 1}")
        where = where[2:]
    field = ".".join(str(p) for p in where)
    message = problem["msg"]
    if problem["type"] == "missing":
        message = "is required"
    elif problem["type"] == "extra_forbidden":
        message = "is not a known field"
    words.append(f"{field} {message}" if field else message)
    return ": ".join(words)
