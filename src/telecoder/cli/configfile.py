"""``$TELECODER_HOME/config.env``: the keys it may hold, their checks, masking, atomic writes.

The file is what ``Settings.load()`` reads (with python-dotenv, through pydantic-settings; the
environment wins over it) and what a systemd unit's ``EnvironmentFile=`` reads: one
``NAME=value`` a line. Names are the settings' variables (``TELECODER_*``, plus the aliases the
settings accept, ``GITHUB_TOKEN``, ``DOCKER_HOST``) and the model vendors' key and endpoint
variables handed to engines (``ANTHROPIC_API_KEY``, …). Values are written bare when they are
plain, else in single quotes; a value that neither reader would read back unchanged (a newline,
a quote, a backslash, ``${``) is refused. Comments and other lines are kept as they are.

Every write replaces the file at once (a temporary file in the same directory, fsynced, then
renamed), mode 0600, in a home of mode 0700.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from telecoder.errors import BadInput
from telecoder.settings import DEFAULT_ENGINE_ENV, DEFAULT_HOME, Settings

_PLAIN = re.compile(r"[A-Za-z0-9_./:@+,=%-]*")
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_SECRET_NAME = re.compile(r"(_TOKEN|_KEY|_SECRET|_PASSWORD)$")
MASK = "****"


def home() -> Path:
    return Path(os.environ.get("TELECODER_HOME", str(DEFAULT_HOME))).expanduser()


def path() -> Path:
    return home() / "config.env"


@dataclass(frozen=True, slots=True)
class Key:
    """A name config.env may hold: a setting's variable (``field`` its name) or an engine's."""

    name: str
    field: str | None
    secret: bool
    description: str


def known() -> dict[str, Key]:
    """Every name ``config set`` accepts."""
    keys: dict[str, Key] = {}
    for field, info in Settings.model_fields.items():
        names = [f"TELECODER_{field.upper()}"]
        alias: Any = info.validation_alias
        if alias is not None and hasattr(alias, "choices"):
            names = [str(c) for c in alias.choices]
        secret = "SecretStr" in str(info.annotation)
        for name in names:
            keys[name] = Key(name, field, secret or bool(_SECRET_NAME.search(name)), _doc(info))
    for name in DEFAULT_ENGINE_ENV:
        keys[name] = Key(name, None, bool(_SECRET_NAME.search(name)), "Handed to engines.")
    return keys


def _doc(info: Any) -> str:
    return str(info.description or "")


def resolve(name: str) -> Key:
    """The key ``name`` means (``port``, ``telecoder-port`` and ``TELECODER_PORT`` alike), or
    BadInput naming the closest ones."""
    keys = known()
    wanted = name.strip().upper().replace("-", "_")
    for candidate in (wanted, f"TELECODER_{wanted}"):
        if candidate in keys:
            return keys[candidate]
    close = difflib.get_close_matches(f"TELECODER_{wanted}", keys, n=3, cutoff=0.75)
    close = close or difflib.get_close_matches(wanted, keys, n=3, cutoff=0.6)
    hint = (
        f"; did you mean {' or '.join(close)}?" if close else " (see `telecoder config list --all`)"
    )
    raise BadInput(f"unknown setting {name!r}{hint}")


def check(key: Key, value: str) -> None:
    """BadInput unless ``value`` parses as the setting ``key`` and the file can hold it."""
    if "\n" in value or "\r" in value or "'" in value or "\\" in value or "${" in value:
        raise BadInput(
            f"{key.name}: a value with a newline, a quote, a backslash or ${{ cannot be kept "
            "in config.env; set it in the environment instead"
        )
    if key.field is None:
        return
    from pydantic import ValidationError

    try:
        given: dict[str, Any] = {key.field: value}
        Settings(_env_file=None, **given)
    except ValidationError as e:
        mine = [err for err in e.errors() if err["loc"] and err["loc"][0] in (key.field, key.name)]
        if mine:
            raise BadInput(f"{key.name}={_shown(key, value)}: {mine[0]['msg']}") from None


def masked(key: Key | None, value: str) -> str:
    """What list/get show of a value: secrets as ``****`` (and the last 4 characters of a long
    one), a URL's password as ``****``."""
    if key is None or key.secret:
        return f"{MASK}{value[-4:]}" if len(value) >= 20 else MASK
    return url_masked(value)


def _shown(key: Key, value: str) -> str:
    return masked(key, value)


def url_masked(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.password:
        return value.replace(f":{parts.password}@", f":{MASK}@", 1)
    return value


def read(file: Path | None = None) -> dict[str, str]:
    """The names and values the file holds (empty when there is no file)."""
    from dotenv import dotenv_values

    target = file or path()
    if not target.is_file():
        return {}
    return {k: v for k, v in dotenv_values(target).items() if v is not None}


def update(changes: dict[str, str | None], file: Path | None = None) -> Path:
    """Set (or, for None, remove) names in the file, keeping its other lines; atomically."""
    target = file or path()
    lines = target.read_text(encoding="utf-8").splitlines() if target.is_file() else []
    pending = dict(changes)
    kept: list[str] = []
    for line in lines:
        found = _LINE.match(line)
        if found is None or found[1] not in changes:
            kept.append(line)
            continue
        value = pending.pop(found[1], None)
        if value is not None:
            kept.append(_line(found[1], value))
    kept += [_line(name, value) for name, value in pending.items() if value is not None]
    write(target, "".join(f"{line}\n" for line in kept))
    return target


def _line(name: str, value: str) -> str:
    return f"{name}={value}" if _PLAIN.fullmatch(value) else f"{name}='{value}'"


def write(target: Path, text: str) -> None:
    """Replace ``target`` with ``text`` at once, mode 0600."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".config.env.", dir=target.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
