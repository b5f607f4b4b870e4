"""``telecoder run``: send a task; run it here and stream it, or queue it (``--detach``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from telecoder import amounts
from telecoder.cli.exits import Exit, print_json
from telecoder.cli.options import TOKEN_ENV, ServerOption
from telecoder.errors import BadInput

if TYPE_CHECKING:  # the rest is imported where it is used: `run --detach` needs little of it
    from telecoder.domain import NewSession, Session
    from telecoder.settings import Settings
    from telecoder.store import Claimed, Store
    from telecoder.worker import Worker


def run(
    repo: Annotated[
        list[str] | None,
        typer.Option(
            "--repo",
            "-r",
            help="Local path or git URL; repeat it for one run over several (fan-out).",
            show_default=False,
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="The task; for --engine shell, a shell command (or --template, or --step).",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="Agent to run.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model for the agent (no tier routing).")
    ] = None,
    tier: Annotated[
        str | None,
        typer.Option(
            help="trivial, standard or complex: which models the gateway routes to "
            "(default: chosen from the task).",
            show_default=False,
        ),
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", "-b", help="Base ref; default the remote's default.")
    ] = None,
    forge: Annotated[
        str | None, typer.Option(help="Where results go: auto, local or github.")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="task (runs once) or chat (waits for `telecoder send` after it).")
    ] = "task",
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    timeout: Annotated[
        float | None, typer.Option(help="Wall-clock limit in seconds.", min=1)
    ] = None,
    max_time: Annotated[
        str | None,
        typer.Option(
            "--max-time", help="Wall-clock limit: 90s, 30m, 2h, 1h30m.", show_default=False
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            help="Dollars its model requests may cost; reached, it waits for `telecoder budget`.",
            show_default=False,
        ),
    ] = None,
    notify: Annotated[
        list[str] | None,
        typer.Option(
            "--notify",
            help="Tell someone when it finishes, fails or asks: slack:@me, telegram:456 "
            "(repeatable; @me: TELECODER_NOTIFY_ME).",
            show_default=False,
        ),
    ] = None,
    step: Annotated[
        list[str] | None,
        typer.Option(
            "--step",
            help="A step of a multi-step task (repeatable): run in order in one agent "
            "conversation, a checkpoint commit pushed after each; a failed step stops the rest.",
            show_default=False,
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Queue it for a worker; print its id.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the finished session as one JSON object.")
    ] = False,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate",
            help="Print what it would likely cost (from similar sessions); run nothing.",
        ),
    ] = False,
    attempts: Annotated[
        int | None,
        typer.Option(
            "--attempts",
            help="Best of N: run the task N times (2-10) on their own branches; the one that "
            "passes its checks and the judge wins and gets the one PR.",
            show_default=False,
        ),
    ] = None,
    engines: Annotated[
        str | None,
        typer.Option(
            "--engines",
            help="Best of N: the candidates' engines in turn, comma-separated, each ENGINE or "
            "ENGINE:MODEL (claude-code,codex,opencode:gpt-4.1-mini); default one candidate each.",
            show_default=False,
        ),
    ] = None,
    repos_file: Annotated[
        Path | None,
        typer.Option(
            "--repos-file",
            help="One repository a line (# comments; - reads stdin): one run over them all.",
            show_default=False,
        ),
    ] = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="A plan: tasks with dependencies (YAML), run as one run.",
            show_default=False,
        ),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            "--after",
            help="Start once this session succeeded (joins its run; skipped if it fails).",
            show_default=False,
        ),
    ] = None,
    server: ServerOption = None,
    template: Annotated[
        str | None,
        typer.Option(help="A named prompt (`telecoder templates list`) instead of PROMPT."),
    ] = None,
    var: Annotated[
        list[str] | None,
        typer.Option("--var", help="A template variable NAME=VALUE (repeatable)."),
    ] = None,
) -> None:
    """Run a task on a repository: a pushed branch (and PR) or an answer. Over several
    repositories, from a plan or after another session: one run (see `telecoder runs`)."""
    if max_time is not None:
        if timeout is not None:
            raise BadInput("--timeout and --max-time both set the time limit: give one")
        timeout = amounts.duration(max_time)
    budget_usd = amounts.dollars(budget) if budget is not None else None
    repos = read_repos(repo or [], repos_file)
    if plan_file is not None or len(repos) > 1 or repos_file is not None or after is not None:
        if template is not None or var:
            prompt, engine = _prompt_of(prompt, template, var or [], engine, False)
        options: dict[str, Any] = {
            "engine": engine,
            "model": model,
            "base": base,
            "forge": forge,
            "mode": mode,
            "priority": priority,
            "tier": tier,
            "notify": tuple(notify or ()),
            "timeout_seconds": timeout,
            "budget_usd": budget_usd,
        }
        return _make_run(
            prompt,
            repos,
            plan_file,
            after,
            server=server,
            detach=detach,
            as_json=as_json,
            request=options,
        )
    prompt, engine = _prompt_of(prompt, template, var or [], engine, bool(step))
    if not repos:
        raise BadInput("Missing option '--repo': the repository (a local path or git URL)")
    repo_one = repos[0]
    if estimate:
        from telecoder.cli.costs import estimate_run

        return estimate_run(
            server, prompt=prompt, repo=repo_one, engine=engine, model=model, as_json=as_json
        )
    if attempts is not None or engines:
        from telecoder.cli import bestof
        from telecoder.intake import Request

        best = Request(
            repo=repo_one, prompt=prompt, engine=engine, model=model, base=base, forge=forge,
            mode=mode, priority=priority, timeout_seconds=timeout, tier=tier,
            budget_usd=budget_usd, notify=tuple(notify or ()),
        )  # fmt: skip
        return bestof.start(
            best, attempts=attempts, engines=bestof.engines_option(engines), detach=detach,
            as_json=as_json, server=server,
        )  # fmt: skip
    if server:
        from telecoder import submit

        body = submit.session_body(
            prompt=prompt, repo=repo_one, engine=engine, model=model, base=base, forge=forge,
            priority=priority, timeout=timeout, mode=mode, tier=tier, budget_usd=budget_usd,
            notify=notify or [], steps=step or [],
        )  # fmt: skip
        if detach:
            # One POST with the standard library: no httpx, no asyncio loop.
            created = submit.create(server, body, token=os.environ.get(TOKEN_ENV) or None)
            if created is not None:
                return _print_created(created, as_json)
        from telecoder.cli import remote  # the HTTP client only when needed

        return remote.run(server, body, detach=detach, as_json=as_json)
    from telecoder import registry
    from telecoder.assemble import build_forges, build_workspace
    from telecoder.cli.common import load_settings, opened, run_async
    from telecoder.cli.output import err, out, print_json
    from telecoder.engine_choice import Fleet
    from telecoder.intake import Request, accept

    settings = load_settings()
    request = Request(
        repo=repo_one,
        prompt=prompt,
        engine=engine,
        model=model,
        base=base,
        forge=forge,
        mode=mode,
        priority=priority,
        timeout_seconds=timeout,
        tier=tier,
        budget_usd=budget_usd,
        notify=tuple(notify or ()),
        steps=tuple(step or ()),
    )

    async def go() -> Exit:
        async with opened(settings) as store:
            accepted = await accept(
                request,
                settings=settings,
                workspace=build_workspace(settings),
                engines=registry.names("engines"),
                forges=build_forges(settings),
                fleet=Fleet(store, settings),
            )
            for warning in accepted.warnings:
                err.print(f"[yellow]warning:[/] {warning}")
            if detach:
                session = await store.sessions.create(accepted.session)
                if as_json:
                    print_json(session.to_dict())
                else:
                    out.print(session.id)
                return Exit.OK
            return await run_here(settings, store, accepted.session, as_json=as_json)

    raise typer.Exit(run_async(go()))


def _print_created(created: dict[str, Any], as_json: bool) -> None:
    warnings = created.pop("warnings", [])
    if warnings:
        from telecoder.cli.output import err

        for warning in warnings:
            err.print(f"[yellow]warning:[/] {warning}")
    if as_json:
        print_json(created)
    else:
        sys.stdout.write(created["id"] + "\n")


def read_repos(repos: Sequence[str], repos_file: Path | None) -> list[str]:
    """``--repo`` values, then the file's lines (blank lines and ``#`` comments skipped)."""
    found = [r.strip() for r in repos if r.strip()]
    if repos_file is not None:
        try:
            text = sys.stdin.read() if str(repos_file) == "-" else repos_file.read_text()
        except OSError as e:
            raise BadInput(f"cannot read {repos_file}: {e.strerror}") from None
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line
            line = line.split(" #", 1)[0].strip()
            if line:
                found.append(line)
        if not found:
            raise BadInput(f"{repos_file} names no repository")
    return found


def _prompt_of(
    prompt: str | None, template: str | None, var: list[str], engine: str | None, steps: bool
) -> tuple[str, str | None]:
    """The prompt given, or the template's rendered (and the engine it names, unless given);
    with steps and neither, empty (the steps are the task)."""
    if template is None:
        if var:
            raise BadInput("--var needs --template")
        if prompt is None and steps:
            return "", engine
        if prompt is None:
            raise BadInput("give the task (PROMPT), --template or --step")
        return prompt, engine
    if prompt is not None:
        raise BadInput("give PROMPT or --template, not both")
    from telecoder import templates
    from telecoder.settings import Settings

    rendered, named = templates.render(
        Settings.load().templates_dir, template, templates.parse_vars(var)
    )
    return rendered, engine or named


def _make_run(
    prompt: str | None,
    repos: list[str],
    plan_file: Path | None,
    after: str | None,
    *,
    server: str | None,
    detach: bool,
    as_json: bool,
    request: dict[str, Any],
) -> None:
    """Several repositories, a plan or --after: one run (cli/runmake.py)."""
    from telecoder import plans
    from telecoder.cli import runmake

    plan = plans.read(plan_file) if plan_file is not None else None
    if plan is not None and prompt:
        raise BadInput("a plan (-f) holds the tasks' prompts: give no PROMPT with it")
    if plan is None and not prompt:
        raise BadInput("give the task (the PROMPT argument)")
    if after is not None and (plan is not None or len(repos) != 1):
        raise BadInput("--after takes one task on one repository (--repo), not a plan or fan-out")
    if plan is not None and len(repos) > 1:
        raise BadInput("a plan names its repositories: give at most one --repo (the default)")
    if plan is None and not repos:
        raise BadInput("name the repositories: --repo PATH (repeatable) or --repos-file FILE")
    if server:
        runmake.remote(
            server,
            runmake.api_body(prompt, repos, plan, after, request),
            detach=detach,
            as_json=as_json,
        )
        return
    from telecoder.intake import Request

    asked = Request(repo=repos[0] if repos else "", prompt=prompt or "", **request)
    runmake.local(
        runmake.Ask(
            request=asked, repos=repos, plan=plan, after=after, detach=detach, as_json=as_json
        )
    )


async def run_here(settings: Settings, store: Store, new: NewSession, *, as_json: bool) -> Exit:
    """Claim ``new`` for this process and run it to its end, streaming its events.

    A transient failure puts the session back in the queue with a backoff: this process waits
    it out and runs the next attempt itself (unless a worker took it first). Ctrl-C cancels.
    """
    from telecoder import budgeting
    from telecoder.assemble import build_worker
    from telecoder.cli.output import err, out, print_json
    from telecoder.gateway.budget import user_of

    worker = build_worker(settings, store, one_shot=True)
    held = await budgeting.gate(store, settings)
    if (reason := held.reason_for(user_of(new.origin))) is not None:
        # A period budget is spent: the session waits in the queue for a worker.
        session = await store.sessions.create(new)
        await store.budgets.hold(held)
        if as_json:
            print_json((await store.sessions.get(session.id)).to_dict())
        else:
            err.print(f"session [bold]{new.id}[/] queued · {reason}")
            out.print(session.id)
        return Exit.OK
    claimed: Claimed | None = await store.queue.create_claimed(new, worker.id)
    if not as_json:
        err.print(f"session [bold]{new.id}[/] · branch {new.branch}")
    return await execute_here(store, worker, claimed, new.id, as_json=as_json)


async def execute_here(
    store: Store,
    worker: Worker,
    claimed: Claimed | None,
    session_id: str,
    *,
    after: int = 0,
    as_json: bool,
) -> Exit:
    """Run ``claimed`` here (None: a worker has it) and stream the events after ``after``,
    until the session ends or, a chat, waits for a message."""
    import asyncio
    import signal

    from telecoder.cli.follow import follow
    from telecoder.cli.output import exit_for, final_line, out, print_json
    from telecoder.recorder import StopReason

    loop = asyncio.get_running_loop()
    cancelled = False
    pending: set[asyncio.Task[object]] = set()

    def on_interrupt() -> None:
        nonlocal cancelled
        cancelled = True
        if not worker.stop_session(session_id, StopReason.CANCELLED):
            # Between attempts: cancel the queued session in the store.
            task = loop.create_task(store.sessions.cancel(session_id))
            pending.add(task)
            task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        execution = asyncio.create_task(
            _attempts(worker, store, claimed, session_id, lambda: cancelled)
        )
        if not as_json:
            await follow(store, session_id, after=after, until=execution)
        await asyncio.wait({execution})
        execution.result()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    session = await store.sessions.get(session_id)
    if as_json:
        print_json(session.to_dict())
    else:
        out.print(final_line(session))
    return exit_for(session)


async def _attempts(
    worker: Worker,
    store: Store,
    claimed: Claimed | None,
    session_id: str,
    cancelled: Callable[[], bool],
) -> None:
    import asyncio
    import time

    from telecoder.domain import SessionStatus

    while claimed is not None:
        await worker.execute(claimed)
        session = await store.sessions.get(session_id)
        if session.status != SessionStatus.QUEUED or cancelled():
            return
        await asyncio.sleep(max(0.0, session.available_at - time.time()))
        claimed = await store.queue.claim(worker.id, only=session_id)
    # A worker took the session over: keep following it until it ends (or a chat waits).
    while not settled(await store.sessions.get(session_id)):  # noqa: ASYNC110 (polls the db)
        await asyncio.sleep(0.2)


def settled(session: Session) -> bool:
    """Nothing more happens to it unless someone acts: it ended, or a chat waits."""
    from telecoder.domain import SessionStatus

    return session.status.terminal or session.status == SessionStatus.BLOCKED
