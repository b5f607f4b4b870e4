#!/usr/bin/env python3
"""telecoder-inbox: an agent talks to its leader from inside its sandbox (standard library only).

    telecoder-inbox post TEXT                 a note in the session's thread
    telecoder-inbox ask TEXT [--wait SECONDS] a question to the leader; with --wait, its answer
    telecoder-inbox messages                  the messages sent to this agent it has not seen
    (each takes --json: the inbox's answer as it came)

It talks to TeleCoder's gateway: ``$TELECODER_INBOX_URL`` with ``$TELECODER_INBOX_TOKEN`` (else
the ``url`` and ``token`` of ``$HOME/.telecoder-inbox.json``, for agent CLIs that keep
``*TOKEN*`` variables from their tools). The token is the attempt's own: it reaches only this
session's thread and messages, and only while the attempt runs.

TeleCoder copies this file where agents find it (``install``); it is never imported inside.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

NAME = "telecoder-inbox"
CONFIG = ".telecoder-inbox.json"
LONGEST_WAIT = 300.0  # the gateway answers sooner anyway (its own bound)


class Failed(Exception):
    pass


def _where() -> tuple[str, str]:
    url = os.environ.get("TELECODER_INBOX_URL", "")
    token = os.environ.get("TELECODER_INBOX_TOKEN", "")
    config = Path(os.environ.get("HOME", "/nonexistent")) / CONFIG
    if (not url or not token) and config.is_file():
        try:
            saved = json.loads(config.read_text())
        except (OSError, ValueError) as e:
            raise Failed(f"cannot read {config}: {e}") from None
        url, token = url or str(saved.get("url", "")), token or str(saved.get("token", ""))
    if not url or not token:
        raise Failed("no inbox here: TELECODER_INBOX_URL and TELECODER_INBOX_TOKEN are not set")
    return url.rstrip("/"), token


def _call(method: str, path: str, body: dict[str, Any] | None = None, wait: float = 0) -> Any:
    url, token = _where()
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    # The inbox is the gateway on loopback: never through a proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=wait + 30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            error = json.loads(e.read())["error"]
            message = f"{error['message']} ({error['code']}, HTTP {e.code})"
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {e.code}"
        raise Failed(message) from None
    except (urllib.error.URLError, OSError) as e:
        raise Failed(f"the inbox at {url} cannot be reached: {e}") from None


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _say(value: Any, text: str, as_json: bool) -> None:
    _out(json.dumps(value) if as_json else text)


def post(text: str, as_json: bool) -> None:
    sent = _call("POST", "/post", {"body": text})
    _say(sent, f"posted (message {sent['id']} in {sent['thread']})", as_json)


def ask(text: str, wait: float, as_json: bool) -> None:
    asked = _call("POST", "/ask", {"question": text})
    whom = asked.get("to") or "the person who gave you this task"
    found = None
    if wait > 0:
        wait = min(wait, LONGEST_WAIT)
        query = urllib.parse.urlencode({"id": asked["id"], "wait": f"{wait:g}"})
        found = _call("GET", f"/answer?{query}", wait=wait)["answer"]
    if as_json:
        _out(json.dumps({**asked, "answer": found}))
    elif found is not None:
        _out(f"Answer from {found['from']}:\n{found['body']}")
    else:
        _out(
            f"Your question (message {asked['id']}) went to {whom}. No answer yet: finish what "
            "you can, then end your turn; you will be resumed with the answer."
        )


def messages(as_json: bool) -> None:
    found = _call("GET", "/messages")["messages"]
    if as_json:
        _out(json.dumps(found))
        return
    if not found:
        _out("no new messages")
    for m in found:
        _out(f"[{m['id']}] {m['kind']} from {m['from']}:\n{m['body']}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=NAME, description="Talk to your leader.")
    parser.add_argument("--json", action="store_true", help="print the inbox's JSON")
    commands = parser.add_subparsers(dest="command", required=True)
    posting = commands.add_parser("post", help="post a note in your thread")
    posting.add_argument("text")
    asking = commands.add_parser("ask", help="ask your leader a question")
    asking.add_argument("text")
    asking.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")
    commands.add_parser("messages", help="the messages sent to you you have not seen")
    args = parser.parse_args(argv)
    try:
        if args.command == "post":
            post(args.text, args.json)
        elif args.command == "ask":
            ask(args.text, args.wait, args.json)
        else:
            messages(args.json)
    except Failed as e:
        sys.stderr.write(f"{NAME}: {e}\n")
        return 1
    return 0


def install(directory: Path) -> Path:
    """This script as ``directory/telecoder-inbox`` (executable, replaced atomically when it
    changed); the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # a sandbox's own uid looks in it
    target = directory / NAME
    content = Path(__file__).read_bytes()
    if target.is_file() and target.read_bytes() == content:
        return directory
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{NAME}-")
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    mode = stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    os.chmod(temporary, mode)
    os.replace(temporary, target)
    return directory


if __name__ == "__main__":
    sys.exit(main())
