"""``telecoder hooks`` (inbound webhooks) and ``telecoder subscriptions`` (notifications out)."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from telecoder.channels import hooks as defs
from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import err, out, print_json
from telecoder.errors import BadInput
from telecoder.store.outbox import EVENT_NAMES, new_secret
from telecoder.templates import parse_vars

hooks_app = typer.Typer(
    help="Inbound webhooks: POST /api/hooks/NAME starts a session.", no_args_is_help=True
)
subscriptions_app = typer.Typer(
    help="Signed HTTP notifications when sessions finish, fail or need input.",
    no_args_is_help=True,
)


@hooks_app.command("add")
def add_hook(
    name: Annotated[str, typer.Argument(help="The hook's name: POST /api/hooks/NAME.")],
    repo: Annotated[str, typer.Option(help="Template of the repository, e.g. {{ payload.repo }}.")],
    prompt: Annotated[
        str | None, typer.Option(help="Template of the task (untrusted payload text).")
    ] = None,
    scheme: Annotated[
        str, typer.Option(help="standard-webhooks or hmac-sha256.")
    ] = "standard-webhooks",
    secret: Annotated[
        str | None, typer.Option(help="The shared secret; one is made and shown if none.")
    ] = None,
    secret_env: Annotated[
        str | None, typer.Option(help="Read the secret from this variable instead.")
    ] = None,
    header: Annotated[
        str | None, typer.Option(help="hmac-sha256: the header with the signature.")
    ] = None,
    instructions: Annotated[
        str | None, typer.Option(help="Trusted text put before the task (not a template).")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="Template of the engine.")] = None,
    model: Annotated[str | None, typer.Option(help="Template of the model.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Template of the key: one session per key (default: the webhook-id)."),
    ] = None,
    template: Annotated[
        str | None, typer.Option(help="A named prompt template instead of --prompt.")
    ] = None,
    var: Annotated[
        list[str] | None,
        typer.Option("--var", help="The template's variable NAME=TEMPLATE (of the payload)."),
    ] = None,
) -> None:
    """Define a hook in $TELECODER_HOME/hooks/NAME.yaml."""
    settings = load_settings()
    made = None
    if secret is None and secret_env is None:
        made = new_secret() if scheme == "standard-webhooks" else secrets.token_hex(32)
    fields = {
        "scheme": scheme,
        "secret": secret or made,
        "secret_env": secret_env,
        "header": header,
        "repo": repo,
        "prompt": prompt,
        "instructions": instructions,
        "engine": engine,
        "model": model,
        "idempotency_key": idempotency_key,
        "template": template,
        "vars": parse_vars(var or []) or None,
    }
    try:
        spec = defs.HookSpec.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValueError as e:
        raise BadInput(f"invalid hook: {e}") from None
    path = defs.save(settings.hooks_dir, defs.check_name(name), spec)
    err.print(f"hook {name} written to {path}; it answers POST /api/hooks/{name}")
    if made is not None:
        err.print("its secret (shown once, also in the file):")
        out.print(made)


@hooks_app.command("list")
def list_hooks(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List the hooks defined in $TELECODER_HOME/hooks (secrets are not shown)."""
    settings = load_settings()
    found = defs.all_hooks(settings.hooks_dir)
    rows = [
        h.to_dict() if isinstance(h, defs.Hook) else {"error": h.message}
        for h in found  # a broken definition is listed with its problem
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        err.print(f"no hooks in {settings.hooks_dir}")
        return
    table = Table("name", "scheme", "repo", "prompt", "key")
    for row in rows:
        if "error" in row:
            table.add_row("[red]invalid[/]", escape(row["error"]), "", "", "")
            continue
        table.add_row(
            row["name"],
            row["scheme"],
            escape(row["repo"]),
            escape(_short(row.get("prompt") or f"template: {row.get('template')}")),
            escape(row.get("idempotency_key") or "(webhook-id)"),
        )
    out.print(table)


@hooks_app.command("remove")
def remove_hook(name: Annotated[str, typer.Argument(help="The hook to remove.")]) -> None:
    """Remove a hook: its URL answers 404 from then on."""
    settings = load_settings()
    path = defs.remove(settings.hooks_dir, name)
    err.print(f"removed {path}")


@subscriptions_app.command("add")
def add_subscription(
    url: Annotated[str, typer.Argument(help="Where notifications are POSTed.")],
    events: Annotated[
        str, typer.Option(help=f"Comma-separated: {', '.join(EVENT_NAMES)}.")
    ] = "all",
    secret: Annotated[
        str | None, typer.Option(help="whsec_<base64> signing secret; one is made if none.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the subscription as JSON.")
    ] = False,
) -> None:
    """Subscribe URL to session events; prints the signing secret once."""
    settings = load_settings()

    async def go() -> None:
        async with opened(settings) as store:
            sub = await store.subscriptions.add(url, events.split(","), secret)
        if as_json:
            print_json({**sub.to_dict(), "secret": sub.secret})
        else:
            out.print(f"{sub.id} {sub.url} ({', '.join(sub.events)})")
            err.print("signing secret (shown once):")
            out.print(sub.secret)

    run_async(go())


@subscriptions_app.command("list")
def list_subscriptions(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List subscriptions (their secrets are not shown)."""
    settings = load_settings()

    async def go() -> None:
        async with opened(settings) as store:
            subs = await store.subscriptions.list()
        if as_json:
            print_json([s.to_dict() for s in subs])
        elif subs:
            table = Table("id", "url", "events", "created")
            for s in subs:
                table.add_row(s.id, escape(s.url), ", ".join(s.events), s.to_dict()["created_at"])
            out.print(table)
        else:
            err.print("no subscriptions")

    run_async(go())


@subscriptions_app.command("remove")
def remove_subscription(
    sub_id: Annotated[str, typer.Argument(metavar="ID", help="The subscription's id.")],
) -> None:
    """Remove a subscription; its notifications not yet sent are dropped."""
    settings = load_settings()

    async def go() -> None:
        async with opened(settings) as store:
            await store.subscriptions.remove(sub_id)
        err.print(f"removed {sub_id}")

    run_async(go())


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
