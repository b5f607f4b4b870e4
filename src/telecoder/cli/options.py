"""Options several commands share, declared without importing what the commands use."""

from __future__ import annotations

from typing import Annotated

import typer

TOKEN_ENV = "TELECODER_TOKEN"  # never an option: it would show in `ps`

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="TELECODER_SERVER",
        help="Talk to this TeleCoder server (http(s)://host:port) instead of the local database; "
        "its token comes from TELECODER_TOKEN.",
        show_default=False,
    ),
]
