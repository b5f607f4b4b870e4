"""The Dockerfile and compose.yaml agree with the CLI and the settings.

The files are parsed and checked against what they name: the command and its port, the
settings' variables, the health endpoint, the home volume, the database service. The image is
also built and run on a Debian base (tests/e2e/test_container_image.py)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from telecoder.cli import COMMANDS
from telecoder.cli.configfile import known
from telecoder.server.routes.meta import router as meta
from telecoder.settings import Settings

ROOT = Path(__file__).parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line.removesuffix(chr(92)).strip()}".strip()
        if line.endswith("\\"):
            continue
        word, _, rest = pending.partition(" ")
        found.append((word.upper(), rest.strip()))
        pending = ""
    return found


def dockerfile() -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for word, rest in instructions():
        by.setdefault(word, []).append(rest)
    return by


def env_of(lines: list[str]) -> dict[str, str]:
    pairs = [word.split("=", 1) for line in lines for word in shlex.split(line)]
    return dict(pairs)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_the_dockerfile_runs_serve_as_a_user_on_the_settings_port() -> None:
    d = dockerfile()
    assert d["FROM"] == ["${BASE}"]  # the base is a build argument, python slim by default
    base = dict(arg.split("=", 1) for arg in d["ARG"])["BASE"]
    assert base.startswith("python:3.")
    assert base.endswith("-slim")
    assert any("bubblewrap" in run for run in d["RUN"])
    venv = "/opt/telecoder/venv"
    assert any(f"python3 -m venv {venv}" in run for run in d["RUN"])
    assert any(f"{venv}/bin/python -m pip install --no-cache-dir" in run for run in d["RUN"])
    assert d["USER"] == ["telecoder"]  # not root
    cmd = yaml.safe_load(d["CMD"][0])  # a JSON array
    assert cmd[0] == "telecoder"
    assert cmd[1] in COMMANDS
    env = env_of(d["ENV"])
    for name in env:
        assert name in {"PYTHONUNBUFFERED", "PATH"} or name in known(), name
    assert env["PATH"].startswith(f"{venv}/bin:")
    assert d["EXPOSE"] == [env["TELECODER_PORT"]]
    assert int(env["TELECODER_PORT"]) == Settings.model_fields["port"].default
    assert yaml.safe_load(d["VOLUME"][0]) == [env["TELECODER_HOME"]]
    health = d["HEALTHCHECK"][0]
    assert "127.0.0.1:%s/api/health" in health
    port = env["TELECODER_PORT"]
    assert f"os.environ.get('TELECODER_PORT', '{port}')" in health  # where the server listens
    assert "/api/health" in {getattr(r, "path", None) for r in meta.routes}
    for copied in d["COPY"]:
        *sources, _ = copied.split()
        for source in sources:
            assert (ROOT / source).exists(), source


def test_compose_runs_the_image_with_postgres_and_the_home_volume() -> None:
    d = dockerfile()
    image_env = env_of(d["ENV"])
    services = compose()["services"]
    app, db = services["telecoder"], services["postgres"]
    assert app["build"] == "."
    assert app["command"] == yaml.safe_load(d["CMD"][0])
    port = image_env["TELECODER_PORT"]
    assert app["ports"] == [f"{port}:{port}"]
    env = app["environment"]
    for name in env:
        assert name in known(), name
    assert env["TELECODER_HOME"] == image_env["TELECODER_HOME"]
    assert [v.split(":")[1] for v in app["volumes"]] == [image_env["TELECODER_HOME"]]
    assert {v.split(":")[0] for v in app["volumes"]} <= set(compose()["volumes"])
    assert app["env_file"] == ["telecoder.env"]
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "seccomp=unconfined" in app["security_opt"]  # bubblewrap's user namespaces
    # The database URL names the postgres service with its own user, password and database.
    pg = db["environment"]
    url = env["TELECODER_DATABASE_URL"]
    assert url == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/"
        f"{pg['POSTGRES_DB']}"
    )
    settings = Settings(_env_file=None, database_url=url, port=int(env["TELECODER_PORT"]))
    assert settings.store_url == url
    assert "pg_isready" in db["healthcheck"]["test"]
    assert {v.split(":")[0] for v in db["volumes"]} <= set(compose()["volumes"])
