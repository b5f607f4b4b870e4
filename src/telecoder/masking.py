"""Secret values never leave: every value TeleCoder knows to be secret is replaced by ``***``.

A ``Masker`` is built once, at an edge, from every secret TeleCoder holds (``from_settings``):

- the forge token (``GITHUB_TOKEN`` / ``TELECODER_GITHUB_TOKEN``), also as the
  ``x-access-token:TOKEN`` credential git sends;
- every API token in ``TELECODER_API_TOKEN`` (``name:token`` list);
- the values of model key variables handed to engines: names in ``TELECODER_ENGINE_ENV`` or in
  the environment that end in ``_API_KEY``, ``_AUTH_TOKEN``, ``_TOKEN``, ``_SECRET``;
- every value in ``$TELECODER_HOME/config.env`` whose name looks secret (``KEY``, ``TOKEN``,
  ``SECRET``, ``PASSWORD``, ``CREDENTIAL``);
- and, per attempt (``Masker.adding``), the credentials a repository's remote URL carries.

What is masked: each value exactly, and its base64 — standard and URL-safe, at each of the three
alignments a value can have inside a longer base64 text (an ``Authorization: Basic`` header, a
``.netrc`` dumped through ``base64``). Other encodings (hex, URL-quoting, a value split across
lines) are not: they are rare in what an agent prints, and every extra variant costs each event.
The diff is scanned separately before a push (``telecoder.secretscan``).

Values shorter than ``MIN_LENGTH`` characters are not masked: ``***`` in place of every ``1234``
would mangle ordinary output and reveal the value by its absence anyway.

Speed: one Aho-Corasick automaton over every variant (``ahocorasick-rs``, leftmost-longest), so
a text is scanned once, O(len(text)) whatever the number of values: about 1 ns a character, where
a regular-expression alternation of the same values costs 15 times more on ordinary output (it
tries each alternative at each position). A masker without values returns its input untouched.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ahocorasick_rs import AhoCorasick, MatchKind
from pydantic import SecretStr

from telecoder.settings import Settings

MIN_LENGTH = 8
MASK = "***"
TOKEN_AS_USER = 20  # an http(s) URL's user name this long is taken for a token

_SECRET_VARIABLE = re.compile(r"(_API_KEY|_AUTH_TOKEN|_TOKEN|_SECRET)$")
_SECRET_CONFIG_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/@\s]+)@")


class Masker:
    """Replaces each known secret value (and its base64) with ``***``."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: frozenset[str] = frozenset(v for v in values if len(v) >= MIN_LENGTH)
        variants = {form for value in self.values for form in _variants(value)}
        self._automaton = (
            AhoCorasick(sorted(variants), matchkind=MatchKind.LeftmostLongest) if variants else None
        )

    def __bool__(self) -> bool:
        return self._automaton is not None

    def __repr__(self) -> str:
        return f"Masker({len(self.values)} values)"  # never the values

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Masker:
        """Every secret the settings, the engines' environment and config.env hold."""
        env = os.environ if environ is None else environ
        values: list[str] = []
        if settings.github_token is not None:
            token = settings.github_token.get_secret_value()
            values += [token, f"x-access-token:{token}"]
        if settings.api_token is not None:
            for entry in settings.api_token.get_secret_value().split(","):
                name, sep, token = entry.strip().partition(":")
                values.append(token if sep else name)
        # Every other secret setting too (channels' tokens and signing secrets, keys), however
        # it was set.
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr) and name != "api_token":
                values.append(value.get_secret_value())
        # The memory embeddings API's key, whatever its variable is called.
        key_env = settings.memory_embedder_key_env
        if key_env and env.get(key_env):
            values.append(env[key_env])
        names = {*settings.engine_env, *env}
        values += [env[n] for n in names if n in env and _SECRET_VARIABLE.search(n.upper())]
        values += config_secrets(settings.home / "config.env")
        return cls(v.strip() for v in values if v.strip())

    def adding(self, values: Iterable[str]) -> Masker:
        """This masker with more values (an attempt's repository credentials); self if none."""
        more = {v for v in values if len(v) >= MIN_LENGTH} - self.values
        return Masker(self.values | more) if more else self

    def found(self, text: str) -> bool:
        """Whether ``text`` holds a secret value (or its base64)."""
        return self._automaton is not None and bool(self._automaton.find_matches_as_indexes(text))

    def text(self, text: str) -> str:
        if self._automaton is None:
            return text
        return self._text(self._automaton, text)

    @staticmethod
    def _text(automaton: AhoCorasick, text: str) -> str:
        matches = automaton.find_matches_as_indexes(text)
        if not matches:
            return text
        parts, last = [], 0
        for _, start, end in matches:
            parts += [text[last:start], MASK]
            last = end
        parts.append(text[last:])
        return "".join(parts)

    def data(self, value: Any) -> Any:
        """``value`` (JSON-like: dicts, lists, strings) with every string masked."""
        if self._automaton is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            assert self._automaton is not None
            return self._text(self._automaton, value)
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        return value


def url_credentials(url: str) -> list[str]:
    """The secrets a URL's userinfo carries, as written and percent-decoded: a password
    (``user:password@``), or a token given as the user of an http(s) URL (``https://TOKEN@``;
    a user name under ``TOKEN_AS_USER`` characters, or an ssh user like ``git@``, is no secret)."""
    match = _USERINFO.match(url.strip())
    if match is None:
        return []
    userinfo = match[1]
    user, sep, password = userinfo.partition(":")
    if sep and password:
        found = [userinfo, password]
    elif url.strip().lower().startswith(("http://", "https://")) and len(user) >= TOKEN_AS_USER:
        found = [user]
    else:
        return []
    return sorted({form for value in found for form in (value, unquote(value))})


def without_credentials(url: str) -> str:
    """``url`` without the userinfo an http(s) URL may carry (for what is stored and shown)."""
    match = _USERINFO.match(url.strip())
    if match is None:
        return url
    parts = urlsplit(url.strip())
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def config_secrets(path: Path) -> list[str]:
    """Values in a ``config.env`` file whose names look secret."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return []
    values = []
    for line in lines:
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and not name.startswith("#") and _SECRET_CONFIG_NAME.search(name):
            values.append(value.strip().strip("'\""))
    return values


def _variants(value: str) -> set[str]:
    """The value and its base64 at the three alignments, standard and URL-safe.

    Inside a longer base64 text the value's bytes start at offset 0, 1 or 2 of a 3-byte group;
    the characters that depend only on the value's bytes are the same whatever surrounds it.
    """
    raw = value.encode()
    forms = {value}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode("ascii")
        start = -(-8 * offset // 6)  # first character made of the value's bits only
        end = 8 * (offset + len(raw)) // 6  # past the last such character
        inner = encoded[start:end]
        if len(inner) >= MIN_LENGTH:
            forms.add(inner)
            forms.add(inner.replace("+", "-").replace("/", "_"))
    return forms


class MaskingFilter(logging.Filter):
    """Masks log records: the message with its arguments, and a traceback's text."""

    def __init__(self, masker: Masker) -> None:
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.masker:
            return True
        message = record.getMessage()
        masked = self.masker.text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.masker.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.masker.text(record.stack_info)
        return True


def install_log_filter(masker: Masker, loggers: Iterable[str] = ("", "uvicorn")) -> None:
    """Mask what every handler of the root logger (and the named loggers and their children)
    writes. Handler filters see records propagated from any logger; logger filters do not."""
    named = [
        n
        for n in logging.Logger.manager.loggerDict
        if any(n == prefix or n.startswith(f"{prefix}.") for prefix in loggers if prefix)
    ]
    names = ["", *named] if "" in loggers else named
    for name in names:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if not any(isinstance(f, MaskingFilter) for f in handler.filters):
                handler.addFilter(MaskingFilter(masker))


def mask_logs(settings: Settings, *, log_file: bool = False) -> Masker:
    """Mask every secret the settings know in what this process logs: called at each entry
    (CLI, worker, server), after logging is configured. With ``TELECODER_LOG_FORMAT=json``,
    every handler writes one JSON object per line (``telecoder.logformat``), masked too. With
    ``TELECODER_LOG_FILE`` and ``log_file`` (the long-running processes: serve, worker), the log
    also goes to that file, rotated (``log_to_file``)."""
    masker = Masker.from_settings(settings)
    if log_file and settings.log_file is not None:
        from telecoder.logformat import log_to_file

        log_to_file(
            settings.log_file, max_bytes=settings.log_max_bytes, backups=settings.log_backups
        )
    install_log_filter(masker)
    if settings.log_format == "json":
        from telecoder.logformat import use_json

        use_json(masker.text)
    return masker
