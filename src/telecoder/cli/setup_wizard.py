"""The questions of ``telecoder setup`` (questionary, on prompt_toolkit), asked on a terminal.

Each answer is checked as it is given (the GitHub token with ``GET /user``, the model key's
prefix) and asked again when wrong; secrets are typed without echo. Flags given on the command
line are taken as answers and not asked. Ctrl-C or Ctrl-D: nothing is written (None).
"""

from __future__ import annotations

import os
from typing import Any

import questionary

from telecoder.cli import setup as s
from telecoder.errors import TeleCoderError


def ask(given: dict[str, Any], settings: Any, *, existing_config: bool) -> dict[str, Any] | None:
    answers = dict(given)
    try:
        return _ask(answers, settings, existing_config)
    except KeyboardInterrupt:
        return None


def _need(answer: Any) -> Any:
    if answer is None:  # questionary answers None on Ctrl-C / Ctrl-D
        raise KeyboardInterrupt
    return answer


def _ask(answers: dict[str, Any], settings: Any, existing_config: bool) -> dict[str, Any] | None:
    if existing_config and not _need(
        questionary.confirm("A config.env exists: change it?", default=True).ask()
    ):
        return None
    api_url = answers.get("github_api_url") or settings.github_api_url
    while not answers.get("github_token") and not answers.get("skip_github"):
        token = _need(
            questionary.password("GitHub token (empty: none, local repositories only):").ask()
        )
        if not token:
            answers["skip_github"] = True
            break
        try:
            login = s.check_github_token(token, api_url)
        except TeleCoderError as e:
            questionary.print(f"  {e.message}", style="fg:ansired")
            continue
        questionary.print(f"  the token belongs to {login}", style="fg:ansigreen")
        answers["github_token"] = token
    while not answers.get("model_key"):
        key = _need(questionary.password("Model API key (empty: none):").ask())
        if not key:
            break
        found = s.detect_provider(key)
        if found is None:
            variable = _need(
                questionary.select(
                    "Which vendor's key is it?",
                    choices=sorted({v for _, v in s.PROVIDERS.values()}),
                ).ask()
            )
            answers["model_key_var"] = variable
        else:
            questionary.print(f"  a {found[0]} key ({found[1]})", style="fg:ansigreen")
        answers["model_key"] = key
    if not answers.get("engine"):
        answers["engine"] = _engine(answers, settings)
    if answers.get("channels") is None:
        picked = _need(
            questionary.checkbox(
                "Channels to take tasks from (space to pick, enter when done):",
                choices=list(s.CHANNELS),
            ).ask()
        )
        answers["channels"] = ",".join(picked)
    for channel in s._channels(answers["channels"]):
        for variable in s.CHANNELS[channel]:
            if answers.get(variable):
                continue
            hint = " (empty: generate one)" if variable in s.GENERATED else ""
            answers[variable] = _need(questionary.password(f"{variable}{hint}:").ask())
    if answers.get("port") is None:
        answers["port"] = int(
            _need(
                questionary.text(
                    "Port the server listens on:",
                    default=str(settings.port),
                    validate=lambda t: (t.isdigit() and 0 < int(t) < 65536) or "a port: 1-65535",
                ).ask()
            )
        )
    if not _need(questionary.confirm("Write config.env?", default=True).ask()):
        return None
    return answers


def _engine(answers: dict[str, Any], settings: Any) -> str:
    env = dict(os.environ) | settings.engine_control_env()
    rows = s.engine_rows(env)
    missing = [r for r in rows if r.path is None and r.name not in s.ALWAYS_INSTALLED]
    script = s.install_script()
    if missing and script is not None:
        names = ", ".join(r.binary for r in missing)
        if _need(
            questionary.confirm(
                f"Not installed: {names}. Install the pinned agent CLIs now (a few minutes)?",
                default=False,
            ).ask()
        ):
            answers["install_agents"] = True
            rows = [s.EngineRow(r.name, r.binary, r.path or "(installing)") for r in rows]
    choices = [questionary.Choice(f"{r.name} ({_installed(r)})", value=r.name) for r in rows]
    default = next((c for c in choices if c.value == settings.engine), None)
    return str(_need(questionary.select("Default engine:", choices=choices, default=default).ask()))


def _installed(row: s.EngineRow) -> str:
    return "installed" if row.path or row.name in s.ALWAYS_INSTALLED else "not installed"
