"""``telecoder orch``: a leader's view of a run — tasks, their dependencies, and attempts.

Not a second scheduler: dispatching a task makes an ordinary session (through ``intake``, the
path ``telecoder run`` takes) in the orch run, which the ordinary queue and workers execute;
``reconcile`` reads the sessions' states back into the tasks. The leader talks to each task's
agent in the inbox thread ``orch:<run>:<task>``: the dispatch message (naming the worktree,
branch and base the session works on), the agent's questions and the leader's answers.

    pending ─(its dependencies succeeded)→ ready ─dispatch→ dispatched → running ⇄ blocked
        → succeeded | failed | cancelled          (retry: a new attempt, a new session)

In a strict run a code task starts from a pinned commit: the explicit base, else the commit
the user's checkout is at — refused while that checkout has uncommitted changes, which the
session would not see.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from telecoder import chat, pinning
from telecoder.domain import (
    MessageKind,
    MessageStatus,
    NewRun,
    Run,
    RunKind,
    Session,
    SessionStatus,
    Task,
    TaskEvent,
    TaskMode,
    TaskStatus,
)
from telecoder.errors import BadInput, Conflict, SessionNotFound
from telecoder.gitcmd import is_url
from telecoder.intake import Request, accept
from telecoder.protocols import Forge
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.workspace import Workspace

DEFAULT_LEADER = "leader"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REDISPATCH = (TaskStatus.DISPATCHED, TaskStatus.RUNNING, TaskStatus.BLOCKED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What dispatching needs, built at the edge (``cli/orch.py``)."""

    store: Store
    settings: Settings
    workspace: Workspace
    engines: Collection[str]
    forges: Mapping[str, Forge]
    # Whether TeleCoder may add to an engine's prompt (not the shell engine's: a command).
    instructed: Callable[[str], bool] = field(default=lambda name: True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatched:
    task: Task
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {**self.task.to_dict(), "warnings": list(self.warnings)}


# --- the run and its tasks --------------------------------------------------------------------


async def init_run(
    store: Store, *, name: str | None, repo: str | None, strict: bool, leader: str | None
) -> Run:
    who = (leader or "").strip() or DEFAULT_LEADER
    spec = {"leader": who, "strict": strict, "repo": _local(repo) if repo else None}
    return await store.orch.create_run(NewRun(kind=RunKind.ORCH, name=name, spec=spec))


def leader_of(run: Run) -> str:
    return str(run.spec.get("leader") or DEFAULT_LEADER)


async def add_task(
    ctx: Context,
    run_id: str,
    key: str,
    *,
    prompt: str,
    repo: str | None = None,
    engine: str | None = None,
    acceptance: str | None = None,
    base: str | None = None,
    mode: str = TaskMode.CODE.value,
    assignee: str | None = None,
) -> Task:
    if not _KEY.match(key):
        raise BadInput(
            f"the task key {key!r} is not 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    if not prompt.strip():
        raise BadInput("the prompt is empty")
    try:
        kind = TaskMode(mode)
    except ValueError:
        raise BadInput(f"unknown mode {mode!r} (known: code, answer)") from None
    if engine is not None and engine not in ctx.engines:
        known = ", ".join(sorted(ctx.engines))
        raise BadInput(f"unknown engine {engine!r} (known: {known})")
    run = await ctx.store.orch.run(run_id)
    where = _local(repo) if repo else run.spec.get("repo")
    if not where:
        raise BadInput(f"task {key!r} names no repository and run {run_id} has none: give --repo")
    return await ctx.store.orch.add_task(
        run_id,
        key,
        prompt=prompt,
        repo=str(where),
        engine=engine,
        acceptance=(acceptance or "").strip() or None,
        base=(base or "").strip() or None,
        mode=kind,
        assignee=(assignee or "").strip() or None,
    )


async def ready(store: Store, run_id: str) -> list[Task]:
    return [t for t in await store.orch.tasks(run_id) if t.status == TaskStatus.READY]


async def status(store: Store, run_id: str) -> dict[str, Any]:
    """The run and its tasks, as ``orch status --json`` prints them."""
    run = await store.orch.run(run_id)
    tasks = await store.orch.tasks(run_id)
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.status.value] = counts.get(task.status.value, 0) + 1
    return {
        "run": run.to_dict(),
        "leader": leader_of(run),
        "strict": bool(run.spec.get("strict", True)),
        "counts": counts,
        "tasks": [t.to_dict() for t in tasks],
        "cursor": await store.orch.last_event(run_id),
    }


# --- dispatch ---------------------------------------------------------------------------------


async def dispatch(
    ctx: Context, run_id: str, key: str | None = None, *, base: str | None = None
) -> list[Dispatched]:
    """The ready tasks (or the one named: ``Conflict`` unless it is ready), each as a new
    session in the run; ``BadInput`` for a dirty checkout in a strict run."""
    if base is not None and key is None:
        raise BadInput("--base is for one task: name it")
    tasks = await ctx.store.orch.tasks(run_id)
    if key is not None:
        chosen = [_find(tasks, run_id, key)]
        if chosen[0].status != TaskStatus.READY:
            raise Conflict(_why_not_ready(chosen[0]))
    else:
        chosen = [t for t in tasks if t.status == TaskStatus.READY]
    return [await _dispatch(ctx, run_id, task, base=base) for task in chosen]


async def _dispatch(
    ctx: Context,
    run_id: str,
    task: Task,
    *,
    base: str | None = None,
    allowed: Collection[TaskStatus] = (TaskStatus.READY,),
    event: dict[str, Any] | None = None,
) -> Dispatched:
    run = await ctx.store.orch.run(run_id)
    leader = leader_of(run)
    strict = bool(run.spec.get("strict", True))
    explicit = (base or "").strip() or task.base
    source = await ctx.workspace.resolve(task.repo)
    warnings: list[str] = []
    if explicit is None:
        if strict and task.mode == TaskMode.CODE and source.checkout is not None:
            dirty = await pinning.dirty_paths(source.checkout)
            if dirty:
                raise BadInput(pinning.dirty_message(task.key, source.checkout, dirty))
        pinned = await pinning.head_commit(source)
    else:
        pinned = explicit
    engine = task.engine
    accepted = await accept(
        Request(
            repo=task.repo,
            prompt=task.prompt,
            engine=engine,
            base=pinned,
            origin={"orch": {"run": run_id, "task": task.key, "leader": leader}},
        ),
        settings=ctx.settings,
        workspace=ctx.workspace,
        engines=ctx.engines,
        forges=ctx.forges,
    )
    warnings.extend(accepted.warnings)
    new = accepted.session
    new = replace(new, prompt=_prompt(task, new.engine, ctx.instructed), run_id=run_id)
    worktree = str(ctx.settings.worktrees / f"{new.id}-1")  # as the worker names attempt 1
    assignee = task.assignee or f"session:{new.id}"
    done = await ctx.store.orch.dispatch(
        run_id, task.key, new, assignee=assignee, worktree=worktree, allowed=allowed, event=event
    )
    message = await ctx.store.inbox.send(
        sender=leader,
        recipient=assignee,
        thread=done.thread,
        kind=MessageKind.MESSAGE,
        body=dispatch_body(done, new.id, repo=source.spec),
    )
    await ctx.store.orch.set_message(run_id, task.key, done.attempt, message.id)
    return Dispatched(task=await ctx.store.orch.task(run_id, task.key), warnings=warnings)


def dispatch_body(task: Task, session_id: str, *, repo: str) -> str:
    """The dispatch message: everything the task's agent (or a person) needs to find its work."""
    attempt = task.attempts[-1]
    lines = [
        f"task: {task.key} (run {task.run_id}, attempt {attempt.number})",
        f"session: {session_id}",
        f"repo: {repo}",
        f"worktree: {attempt.worktree}",
        f"branch: {attempt.branch}",
        f"base: {attempt.base_ref or '(the remote default branch)'}",
        f"mode: {task.mode.value}",
        f"acceptance: {task.acceptance or '(none given)'}",
        f"thread: {task.thread} (ask the leader here)",
        "prompt:",
        task.prompt,
    ]
    return "\n".join(lines)


def _prompt(task: Task, engine: str, instructed: Callable[[str], bool]) -> str:
    if not instructed(engine):
        return task.prompt  # the shell engine's prompt is a command
    parts = [task.prompt]
    if task.acceptance:
        parts.append(f"Acceptance criteria (the task is done when they hold): {task.acceptance}")
    if task.mode == TaskMode.ANSWER:
        parts.append("This task asks for an answer: change no files.")
    return "\n\n".join(parts)


# --- reading the sessions back ----------------------------------------------------------------


async def reconcile(store: Store, run_id: str) -> list[TaskEvent]:
    """Reflect the sessions' states into the tasks in flight (and their attempts' worktrees
    as the workers made them); dependants that became ready say so. Returns the events."""
    cursor = await store.orch.last_event(run_id)
    before = {t.key: t.status for t in await store.orch.tasks(run_id)}
    for task in await store.orch.tasks(run_id):
        if not task.status.in_flight or task.session_id is None:
            continue
        session = await store.sessions.get(task.session_id)
        await _real_worktree(store, task, session)
        target = await _task_status(store, task, session)
        if target == task.status:
            continue
        data: dict[str, Any] = {}
        if session.error and target in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            data["error"] = session.error
        if session.question and target == TaskStatus.BLOCKED:
            data["question"] = session.question
        await store.orch.move(task, target, data=data)
    after = await store.orch.tasks(run_id)
    for task in after:
        if task.status == TaskStatus.READY and before.get(task.key) != TaskStatus.READY:
            await store.orch.note(task, "ready", {"status": TaskStatus.READY.value})
    return await store.orch.events(run_id, after=cursor)


async def _task_status(store: Store, task: Task, session: Session) -> TaskStatus:
    match session.status:
        case SessionStatus.SUCCEEDED:
            return TaskStatus.SUCCEEDED
        case SessionStatus.FAILED | SessionStatus.DEAD | SessionStatus.SKIPPED:
            return TaskStatus.FAILED
        case SessionStatus.CANCELLED:
            return TaskStatus.CANCELLED
        case SessionStatus.BLOCKED:
            return TaskStatus.BLOCKED
        case SessionStatus.QUEUED | SessionStatus.WAITING if session.attempt == 0:
            return TaskStatus.DISPATCHED
    # Running (or queued again for its next attempt): blocked while it asks the leader.
    if await open_questions(store, task):
        return TaskStatus.BLOCKED
    return TaskStatus.RUNNING


async def _real_worktree(store: Store, task: Task, session: Session) -> None:
    """The worktree and branch the worker made (a retried attempt names its own)."""
    attempt = task.attempts[-1]
    for made in reversed(await store.sessions.attempts(session.id)):
        if made.workspace_path:
            branch = made.branch or attempt.branch
            if (made.workspace_path, branch) != (attempt.worktree, attempt.branch):
                await store.orch.update_attempt(
                    task, attempt.number, worktree=made.workspace_path, branch=branch
                )
            return


# --- questions and answers --------------------------------------------------------------------


async def open_questions(store: Store, task: Task) -> list[Any]:
    found = await store.inbox.list(thread=task.thread, limit=1000)
    return [m for m in found if m.kind == MessageKind.QUESTION and not m.status.terminal]


async def blocked(store: Store, run_id: str) -> list[dict[str, Any]]:
    """What waits for the leader: each open question in a task's thread, and each task whose
    session is blocked asking a question."""
    found: list[dict[str, Any]] = []
    for task in await store.orch.tasks(run_id):
        if task.status.terminal:
            continue
        for message in await open_questions(store, task):
            found.append(_asks(task, "inbox", message.body, message.id, message.sender))
        if task.session_id is None:
            continue
        session = await store.sessions.get(task.session_id)
        if session.status == SessionStatus.BLOCKED and session.question:
            found.append(_asks(task, "session", session.question, None, f"session:{session.id}"))
    return found


def _asks(task: Task, via: str, question: str, message: int | None, sender: str) -> dict[str, Any]:
    return {
        "task": task.key,
        "status": task.status.value,
        "session_id": task.session_id,
        "via": via,
        "question": question,
        "message_id": message,
        "from": sender,
        "thread": task.thread,
    }


async def answer(store: Store, run_id: str, key: str, body: str) -> dict[str, Any]:
    """Answer the task's open question: a reply of kind ``answer`` to the oldest one in its
    thread (which is then done), and, when its session is blocked on a question, the answer
    that resumes the same agent session. ``Conflict`` when nothing asks."""
    if not body.strip():
        raise BadInput("the answer is empty")
    run = await store.orch.run(run_id)
    leader = leader_of(run)
    task = _find(await store.orch.tasks(run_id), run_id, key)
    questions = await open_questions(store, task)
    session = await store.sessions.get(task.session_id) if task.session_id else None
    asks = session is not None and session.status == SessionStatus.BLOCKED and session.question
    if not questions and not asks:
        raise Conflict(f"task {key!r} has no open question")
    result: dict[str, Any] = {"task": key, "message_id": None, "reply_id": None, "resumed": None}
    if questions:
        question = questions[0]
        if question.claimed_by not in (None, leader):
            raise Conflict(f"question {question.id} is claimed by {question.claimed_by}")
        reply = await store.inbox.reply(
            question.id, sender=leader, body=body, kind=MessageKind.ANSWER
        )
        await store.inbox.finish(question.id, leader, MessageStatus.DONE, f"answered: {reply.id}")
        result.update(message_id=question.id, reply_id=reply.id)
    if asks and session is not None:
        await chat.answer(store, session.id, body, sender=leader)
        result["resumed"] = session.id
    await store.orch.note(task, "answered", {k: v for k, v in result.items() if k != "task"})
    if task.status == TaskStatus.BLOCKED and task.session_id is not None:
        # Resumed, or no longer waiting on the leader: running again (unless it asks more).
        target = await _task_status(store, task, await store.sessions.get(task.session_id))
        if target != task.status:
            await store.orch.move(task, target, data={"reason": "answered"})
    return result


# --- the leader's other moves -----------------------------------------------------------------


async def retry(ctx: Context, run_id: str, key: str) -> Dispatched | Task:
    """A failed or cancelled task again: a new attempt (a new session) — or, when what it
    depends on has not all succeeded, pending again."""
    task = _find(await ctx.store.orch.tasks(run_id), run_id, key)
    if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise Conflict(
            f"task {key!r} is {task.status.value}: only a failed or cancelled task is retried"
        )
    tasks = {t.key: t for t in await ctx.store.orch.tasks(run_id)}
    if all(tasks[d].status == TaskStatus.SUCCEEDED for d in task.depends_on):
        allowed = (TaskStatus.FAILED, TaskStatus.CANCELLED)
        return await _dispatch(ctx, run_id, task, allowed=allowed, event={"retried": True})
    if not await ctx.store.orch.move(task, TaskStatus.PENDING, kind="retried"):
        raise Conflict(f"task {key!r} changed meanwhile")
    return await ctx.store.orch.task(run_id, key)


async def reassign(
    ctx: Context, run_id: str, key: str, *, to: str, engine: str | None = None
) -> Dispatched | Task:
    """The task's work to ``to`` (and ``engine``): in flight, its session is cancelled and a
    new attempt dispatched to them; otherwise its next dispatch goes to them."""
    if not to.strip():
        raise BadInput("--to names no one")
    if engine is not None and engine not in ctx.engines:
        raise BadInput(f"unknown engine {engine!r} (known: {', '.join(sorted(ctx.engines))})")
    task = _find(await ctx.store.orch.tasks(run_id), run_id, key)
    if task.status == TaskStatus.SUCCEEDED:
        raise Conflict(f"task {key!r} succeeded: nothing to reassign")
    task = await ctx.store.orch.reassign(task, to.strip(), engine)
    if not task.status.in_flight:
        return task
    if task.session_id is not None:
        await _cancel_session(ctx.store, task.session_id)
    return await _dispatch(ctx, run_id, task, allowed=_REDISPATCH, event={"reassigned": True})


async def cancel(store: Store, run_id: str, key: str | None = None) -> list[Task]:
    """Cancel the task (or every task of the run that has not ended) and its session."""
    tasks = await store.orch.tasks(run_id)
    chosen = [_find(tasks, run_id, key)] if key is not None else tasks
    live = [t for t in chosen if not t.status.terminal]
    if not live:
        what = f"task {key!r}" if key is not None else f"every task of run {run_id}"
        raise Conflict(f"{what} has ended already")
    for task in live:
        if task.session_id is not None and task.status.in_flight:
            await _cancel_session(store, task.session_id)
        await store.orch.move(task, TaskStatus.CANCELLED, kind="cancelled")
    return [await store.orch.task(run_id, t.key) for t in live]


async def _cancel_session(store: Store, session_id: str) -> None:
    with contextlib.suppress(Conflict):  # it ended meanwhile
        await store.sessions.cancel(session_id)


async def cleanup(ctx: Context, run_id: str) -> list[dict[str, Any]]:
    """Remove the worktrees of the run's finished tasks — only TeleCoder's own: a directory
    in its worktrees folder, named for the attempt's session, whose session has ended."""
    root = ctx.settings.worktrees.resolve()
    removed: list[dict[str, Any]] = []
    for task in await ctx.store.orch.tasks(run_id):
        if not task.status.terminal:
            continue
        for attempt in task.attempts:
            if attempt.cleaned_at is not None:
                continue
            path = Path(attempt.worktree)
            ours = path.parent.resolve() == root and re.fullmatch(
                rf"{re.escape(attempt.session_id)}-\d+", path.name
            )
            session = await ctx.store.sessions.get(attempt.session_id)
            if not ours or not session.status.terminal:
                continue
            if path.is_dir():
                await ctx.workspace.remove_path(path)
                path.with_name(path.name + ".done").unlink(missing_ok=True)
                item = {"task": task.key, "attempt": attempt.number, "worktree": str(path)}
                removed.append(item)
                await ctx.store.orch.note(task, "cleaned", item)
            await ctx.store.orch.cleaned(task, attempt.number)
    return removed


async def wait(
    store: Store, run_id: str, *, after: int | None, seconds: float, interval: float = 0.5
) -> tuple[list[TaskEvent], int]:
    """The task events after ``after`` (default: the newest now), once there is one,
    reconciling while it waits; ``TimedOut`` after ``seconds``."""
    await store.orch.run(run_id)
    cursor = await store.orch.last_event(run_id) if after is None else after
    if seconds < 0:
        raise BadInput("the timeout cannot be negative")

    async def probe() -> list[TaskEvent] | None:
        await reconcile(store, run_id)
        return await store.orch.events(run_id, after=cursor) or None

    what = f"task event in run {run_id} after event {cursor}"
    found = await store.inbox.wait(probe, seconds=seconds, what=what, interval=interval)
    return found, found[-1].id


# --- helpers ----------------------------------------------------------------------------------


def _find(tasks: Sequence[Task], run_id: str, key: str) -> Task:
    for task in tasks:
        if task.key == key:
            return task
    raise SessionNotFound(f"run {run_id} has no task {key!r}")


def _why_not_ready(task: Task) -> str:
    if task.status == TaskStatus.PENDING:
        return f"task {task.key!r} is pending: it waits for {', '.join(task.depends_on)}"
    return f"task {task.key!r} is {task.status.value}, not ready (retry or reassign it)"


def _local(repo: str) -> str:
    """A local path as an absolute one (it is used from elsewhere later); a URL as given."""
    if is_url(repo):
        return repo
    path = Path(repo).expanduser()
    return str(path.resolve()) if path.exists() else repo
