"""The application factory: ``create_app(settings, store)`` -> a FastAPI app with its lifespan.

Nothing here is module-level state: every app gets its own bus, guard, limiter and workers, so
tests build as many as they like. Errors become status codes here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Route

from telecoder import __version__, registry, telegram_bot
from telecoder.assemble import build_upkeep, build_workspace
from telecoder.backups import BackupSchedule
from telecoder.bus import Bus
from telecoder.channels import configured
from telecoder.conversation import Conversations
from telecoder.deliverer import Deliverer, load_subscribers, policy_of
from telecoder.dispatcher import dispatcher_of
from telecoder.errors import (
    BadInput,
    Conflict,
    EndpointNotFound,
    GoalNotFound,
    HookNotFound,
    JobNotFound,
    LeaseLost,
    MemoryNotFound,
    MessageNotFound,
    RegisteredRepoNotFound,
    SessionNotFound,
    StoreUnavailable,
    SubscriptionNotFound,
    TeleCoderError,
    TemplateNotFound,
    UserNotFound,
    WebhookSignatureInvalid,
    WorkerNotFound,
)
from telecoder.gateway.endpoints import Registry, env_specs
from telecoder.github_replies import GitHubReplies
from telecoder.masking import Masker
from telecoder.planner import planner_of
from telecoder.protocols import Inbound, Listening
from telecoder.scheduler import Scheduler
from telecoder.server.auditing import AuditLog
from telecoder.server.auth import AuthError, Guard, Tokens, check_bind
from telecoder.server.deps import LoginRequired
from telecoder.server.diff import DiffSource, DiffUnavailable, git_diff_source
from telecoder.server.limits import BodyLimit, RateLimited, RateLimiter, SecurityHeaders
from telecoder.server.mcp_route import PATH as MCP_PATH
from telecoder.server.mcp_route import McpRoute
from telecoder.server.render import STATIC, templates
from telecoder.server.routes import (
    audit,
    bestof,
    budgets,
    cache,
    control,
    costs,
    council,
    dashboard,
    endpoints,
    events,
    github,
    goals,
    hooks,
    inbox,
    jobs,
    login,
    memories,
    meta,
    metrics,
    remote_kept,
    remote_memories,
    remote_workers,
    repos,
    run_create,
    runs,
    session_forms,
    session_page,
    sessions,
    slack,
    subscriptions,
    telegram_webhook,
    tickets,
    workers,
)
from telecoder.server.state import (
    Intake,
    ServerState,
    WorkerRunner,
    Workers,
    default_intake,
    watch_pause,
)
from telecoder.settings import Settings
from telecoder.store import Store

log = logging.getLogger(__name__)
Receive = Callable[[Inbound], Awaitable[object]]

LOGIN_ATTEMPTS_PER_MINUTE = 10


def _conversations(
    settings: Settings, store: Store, intake: Intake, bus: Bus
) -> Conversations | None:
    """Channel messages into sessions, when a channel is configured."""
    found = configured.from_settings(settings)
    if not found:
        return None
    return Conversations(
        store,
        intake=intake,
        dispatcher=dispatcher_of(settings),
        channels=found,
        engines=registry.names("engines"),
        poke=bus.poke,
        public_url=settings.public_url,
        templates_dir=settings.templates_dir,
        planner=planner_of(settings),
        facts=Masker.from_settings(settings) if settings.memory else None,
    )


def _listen(
    conversations: Conversations | None,
    stop: asyncio.Event,
    every: float,
    fronts: Mapping[str, Receive] | None = None,
) -> set[asyncio.Task[None]]:
    """The channels' own loops: progress reports, and the channels that fetch their messages
    (Telegram's long polling, Slack's Socket Mode). A channel with a front (Telegram's bot:
    who may talk, commands) hands its messages to it rather than to the conversations."""
    if conversations is None:
        return set()
    tasks = {asyncio.create_task(conversations.watch(stop, every), name="channels-running")}
    for name, channel in conversations.channels.items():
        if isinstance(channel, Listening):
            listen = channel.listen((fronts or {}).get(name, conversations.receive), stop)
            tasks.add(asyncio.create_task(listen, name=f"{name}-listen"))
    return tasks


def create_app(
    settings: Settings,
    store: Store,
    *,
    start_workers: WorkerRunner | None = None,
    intake: Intake | None = None,
    diff_source: DiffSource | None = None,
) -> FastAPI:
    """The server for ``store``; ``start_workers`` runs embedded workers until told to stop.

    Raises InsecureBind when ``settings.host`` is not loopback and no API token is set.
    """
    tokens = Tokens.parse(settings.api_token.get_secret_value() if settings.api_token else None)
    check_bind(tokens, settings.host)
    github_replies = GitHubReplies(settings) if settings.github_webhook_secret else None
    replies = {"github": github_replies.subscriber} if github_replies else {}
    intake = intake or default_intake(settings, store)
    bus = Bus(
        store,
        poll_seconds=settings.bus_poll_seconds,
        fallback_seconds=settings.bus_fallback_seconds,
        listen=settings.bus_notify,
    )
    conversations = _conversations(settings, store, intake, bus)
    if conversations is not None:
        replies["channels"] = conversations.subscriber
    telegram = telegram_bot.attach(conversations, store)
    fronts: dict[str, Receive] = {"telegram": telegram.receive} if telegram else {}
    state = ServerState(
        settings=settings,
        store=store,
        bus=bus,
        guard=Guard(tokens, store.users),
        limiter=RateLimiter(settings.rate_limit_per_minute),
        login_limiter=RateLimiter(LOGIN_ATTEMPTS_PER_MINUTE),
        intake=intake,
        diff_source=diff_source or git_diff_source(build_workspace(settings)),
        workers=Workers(runner=start_workers),
        deliverer=Deliverer(
            store, policy=policy_of(settings), subscribers={**load_subscribers(), **replies}
        ),
        conversations=conversations,
        upkeep=build_upkeep(settings, store),
    )
    # Scheduled backups (TELECODER_BACKUP_SCHEDULE): a bad schedule stops the start here.
    backing_up = BackupSchedule(store, settings) if settings.backup_schedule else None
    mcp = McpRoute(state.guard)  # /mcp: the MCP tools, over this app's own API

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.bus.start()
        workers = state.workers
        if workers.runner is not None:
            workers.task = asyncio.create_task(workers.runner(workers.stop), name="workers")
        sending = None
        if state.deliverer is not None:
            sending = asyncio.create_task(state.deliverer.run(workers.stop), name="deliverer")
        # Endpoint checks and model discovery, also while no session runs (a check done
        # lately by any process is not repeated).
        registry = Registry(
            store,
            env_specs(),
            check_seconds=settings.endpoint_check_seconds,
            unhealthy_after=settings.endpoint_failures,
        )
        checks = asyncio.create_task(registry.run(workers.stop), name="endpoint-checks")
        announcing = None
        if github_replies is not None:  # queued → running, on GitHub
            announcing = asyncio.create_task(
                github_replies.watch(store, workers.stop, settings.notify_poll_seconds),
                name="github-running",
            )
        listening = _listen(conversations, workers.stop, settings.notify_poll_seconds, fronts)
        # Cron jobs: every server fires them (one firing per slot, whoever runs).
        scheduling = asyncio.create_task(
            Scheduler(store, settings, intake).run(workers.stop), name="scheduler"
        )
        backups = None
        if backing_up is not None:
            backups = asyncio.create_task(backing_up.run(workers.stop), name="backups")
        pausing = asyncio.create_task(watch_pause(state, workers.stop), name="pause-state")
        # No embedded worker: the server ends idle chats and judges best-of runs itself.
        upkeep = None
        if workers.runner is None and state.upkeep is not None:
            upkeep = asyncio.create_task(state.upkeep.run(workers.stop), name="upkeep")
        try:
            async with mcp.running():
                yield
        finally:
            workers.stop.set()
            await asyncio.wait({pausing}, timeout=15)
            if sending is not None:
                await sending
            if announcing is not None:
                await announcing
            await asyncio.wait(listening or {checks}, timeout=15)
            await state.background.settle(grace=15)
            if conversations is not None:
                await conversations.settle(grace=15)
            if telegram is not None:
                await telegram.channel.close()
            await asyncio.wait({checks}, timeout=15)
            await asyncio.wait({scheduling}, timeout=15)
            if backups is not None:
                await asyncio.wait({backups}, timeout=60)
            if upkeep is not None:
                await asyncio.wait({upkeep}, timeout=15)
            if state.upkeep is not None:
                await state.upkeep.settle(grace=60)
            if workers.task is not None:
                try:
                    await workers.task
                except Exception:
                    log.exception("the embedded workers failed")
            # What did not end within its wait is stopped now and awaited: a task left pending
            # when the loop closes drops its pooled connection unreturned.
            ours = (pausing, sending, announcing, checks, scheduling, backups, upkeep, *listening)
            left = [t for t in ours if t is not None and not t.done()]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            await state.bus.close()

    app = FastAPI(
        title="TeleCoder",
        version=__version__,
        summary="Send a task, get a pull request — or an answer.",
        lifespan=lifespan,
    )
    app.state.telecoder = state
    app.state.github = github_replies
    slack.connect(state)  # Socket Mode's button clicks
    app.state.telegram = telegram
    app.state.templates = templates()
    routers = (
        meta,
        metrics,
        control,
        sessions,
        run_create,
        events,
        workers,
        cache,
        budgets,
        hooks,
        github,
        slack,
        tickets,
        subscriptions,
        costs,
        endpoints,
        repos,
        goals,
        jobs,
        inbox,
        memories,
        dashboard,
        login,
        session_page,
        session_forms,
        telegram_webhook,
    )
    for module in routers:
        app.include_router(module.router)
    app.include_router(costs.pages)
    app.include_router(subscriptions.page_router)
    app.include_router(endpoints.pages)
    app.include_router(repos.pages)
    app.include_router(memories.pages)
    app.include_router(bestof.router)
    app.include_router(bestof.pages)
    app.include_router(council.router)
    app.include_router(runs.router)  # runs: list, show, cancel, retry-failed
    app.include_router(runs.pages)
    app.include_router(jobs.pages)
    app.include_router(workers.pages)
    app.include_router(remote_workers.router)  # the remote-worker protocol
    app.include_router(remote_memories.router)  # its attempts' memories
    app.include_router(remote_kept.router)  # the workspaces it keeps
    app.include_router(audit.router)
    app.include_router(audit.pages)
    app.router.routes.append(Route(MCP_PATH, mcp, name="mcp"))
    mcp.app = app
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _handle_errors(app)
    app.add_middleware(AuditLog, store=store)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


# --- errors: translated here only ---


_STATUS: list[tuple[type[TeleCoderError], int, str]] = [
    (BadInput, 422, "bad_input"),
    (SessionNotFound, 404, "not_found"),
    (HookNotFound, 404, "not_found"),
    (JobNotFound, 404, "not_found"),
    (TemplateNotFound, 404, "not_found"),
    (SubscriptionNotFound, 404, "not_found"),
    (RegisteredRepoNotFound, 404, "not_found"),
    (GoalNotFound, 404, "not_found"),
    (WebhookSignatureInvalid, 401, "unauthorized"),
    (EndpointNotFound, 404, "not_found"),
    (DiffUnavailable, 404, "no_diff"),
    (MessageNotFound, 404, "not_found"),
    (MemoryNotFound, 404, "not_found"),
    (UserNotFound, 404, "not_found"),
    (WorkerNotFound, 404, "not_found"),
    (LeaseLost, 409, "lease_lost"),
    (Conflict, 409, "conflict"),
    (StoreUnavailable, 503, "unavailable"),
    (TeleCoderError, 500, "internal"),
]
_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "bad_input",
    429: "rate_limited",
}


def error_response(
    request: Request,
    status: int,
    code: str,
    detail: str,
    fields: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    if _wants_page(request):
        return dashboard.render(
            request,
            request.app.state.telecoder,
            None,
            "error.html",
            {"status": status, "detail": detail, "fields": fields or []},
            status_code=status,
        )
    body = {"error": code, "detail": detail, "fields": fields or []}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def _wants_page(request: Request) -> bool:
    path = request.url.path
    return (
        not path.startswith(("/api/", "/static/"))
        and "text/html" in request.headers.get("accept", "")
        and "hx-request" not in request.headers
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
        return error_response(request, 422, "bad_input", f"invalid request: {summary}", fields)

    @app.exception_handler(TeleCoderError)
    async def domain_error(request: Request, exc: TeleCoderError) -> Response:
        for cls, status, code in _STATUS:
            if isinstance(exc, cls):
                if status >= 500:
                    log.error("request failed: %s", exc.message)
                return error_response(request, status, code, exc.message)
        raise AssertionError("TeleCoderError is in the table")  # pragma: no cover

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        code = _HTTP_CODES[exc.status]
        return error_response(request, exc.status, code, exc.detail, headers=headers)

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> Response:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return error_response(request, 429, "rate_limited", str(exc), headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(request, exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if "hx-request" in request.headers:  # a fragment: send the whole page to the login
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303)
