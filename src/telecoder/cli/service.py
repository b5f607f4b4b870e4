"""``telecoder service install|status|uninstall``: TeleCoder as a systemd service.

``install`` renders a unit for ``telecoder serve`` (or ``--worker``: ``telecoder worker``) that
restarts on failure, reads its secrets from ``EnvironmentFile=$TELECODER_HOME/config.env``, logs
to the journal (and, with ``--log-file``, to a file TeleCoder rotates itself:
``TELECODER_LOG_FILE``, ``TELECODER_LOG_MAX_BYTES``, ``TELECODER_LOG_BACKUPS``), and is
hardened — except where the sandbox needs otherwise:

- ``RestrictNamespaces=``, ``PrivateUsers=`` stay off: bubblewrap makes user, mount, pid, net,
  ipc and uts namespaces for every session;
- ``MemoryDenyWriteExecute=`` stays off: the agent CLIs run on Node, whose JIT needs it;
- no ``CapabilityBoundingSet=`` / ``SystemCallFilter=``: bubblewrap (as root) needs
  ``CAP_SYS_ADMIN`` and the ``mount``/``unshare``/``pivot_root`` calls;
- ``ProtectSystem=strict`` makes everything but ``$TELECODER_HOME`` (and the worktrees) read-only:
  a local repository the service pushes to must be named with ``--writable PATH``;
- ``NoNewPrivileges=yes`` is kept: it breaks only a setuid-root bubblewrap, which TeleCoder does
  not need (unprivileged user namespaces, or the service running as root).

``--user`` writes ``~/.config/systemd/user/``, else ``/etc/systemd/system/``; then, when systemd
runs (``/run/systemd/system`` exists), ``systemctl [--user] daemon-reload`` and ``enable --now``.
Without systemd the unit is written and the command exits 8 (unsupported), saying so.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from telecoder.cli.exits import Exit
from telecoder.errors import BadInput

app = typer.Typer(
    help="Run TeleCoder as a systemd service: install (hardened unit), status, uninstall.",
    no_args_is_help=True,
)

SYSTEMD_RUNNING = Path("/run/systemd/system")
SYSTEM_DIR = Path("/etc/systemd/system")

UserOption = Annotated[
    bool, typer.Option("--user", help="A user unit (~/.config/systemd/user), no root needed.")
]
WorkerOption = Annotated[
    bool, typer.Option("--worker", help="The unit runs `telecoder worker`, not `serve`.")
]

# Hardening that the sandbox (bubblewrap in the service) still works under.
HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=no
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
UMask=0077
# Left off on purpose, for the sandbox: RestrictNamespaces= and PrivateUsers= (bubblewrap makes
# namespaces), MemoryDenyWriteExecute= (Node's JIT), CapabilityBoundingSet= and
# SystemCallFilter= (bubblewrap as root mounts and pivots).
"""


def unit_name(worker: bool) -> str:
    return "telecoder-worker.service" if worker else "telecoder.service"


def unit_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return SYSTEM_DIR


def executable() -> str:
    """The ``telecoder`` this command runs as (its virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "telecoder"
    if beside.is_file():
        return str(beside)
    return shutil.which("telecoder") or str(beside)


def render(
    *,
    home: Path,
    worker: bool,
    user: bool,
    command: str,
    writable: list[Path],
    log_file: Path | None = None,
    run_as: str | None = None,
) -> str:
    """The unit file's text."""
    what = "worker (telecoder worker)" if worker else "server (telecoder serve)"
    args = [command, "worker" if worker else "serve"]
    paths = " ".join(_quoted(p) for p in dict.fromkeys([home, *writable]))
    lines = [
        "# Written by `telecoder service install`; see docs/operations.md.",
        "[Unit]",
        f"Description=TeleCoder {what}",
        "After=network-online.target",
        "Wants=network-online.target",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={shlex.join(args)}",
        f"Environment={_quoted_assignment('TELECODER_HOME', str(home))}",
        *(
            [f"Environment={_quoted_assignment('TELECODER_LOG_FILE', str(log_file))}"]
            if log_file
            else []
        ),
        "Environment=PYTHONUNBUFFERED=1",
        f"EnvironmentFile=-{home / 'config.env'}",
        f"WorkingDirectory={_quoted(home)}",
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM hands running sessions back to the queue; give it time.
        "KillMode=mixed",
        "TimeoutStopSec=60",
    ]
    if run_as and not user:
        lines.append(f"User={run_as}")
    lines += HARDENING.rstrip("\n").splitlines()
    lines.append(f"ReadWritePaths={paths}" + (f" {_quoted(log_file.parent)}" if log_file else ""))
    # What is printed before logging starts (a traceback at startup) goes to the journal.
    lines += ["StandardOutput=journal", "StandardError=journal", "SyslogIdentifier=telecoder"]
    lines += ["", "[Install]", f"WantedBy={'default.target' if user else 'multi-user.target'}"]
    return "\n".join(lines) + "\n"


def _quoted(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _quoted_assignment(name: str, value: str) -> str:
    return f'"{name}={value}"' if any(c.isspace() for c in value) else f"{name}={value}"


def systemd_running() -> bool:
    return SYSTEMD_RUNNING.is_dir()


def _systemctl(user: bool, *args: str) -> int:
    command = ["systemctl", *(["--user"] if user else []), *args]
    typer.echo(f"$ {shlex.join(command)}")
    return subprocess.run(command, check=False).returncode


@app.command()
def install(
    user: UserOption = False,
    worker: WorkerOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the unit; write nothing.")
    ] = False,
    log_file: Annotated[
        Path | None,
        typer.Option(
            help="Also log to this file, rotated by TeleCoder (TELECODER_LOG_FILE; size and "
            "count: TELECODER_LOG_MAX_BYTES, TELECODER_LOG_BACKUPS in config.env)."
        ),
    ] = None,
    writable: Annotated[
        list[Path] | None,
        typer.Option(
            "--writable",
            help="Another path the service may write (ReadWritePaths=): local repositories "
            "it pushes to. Repeatable.",
        ),
    ] = None,
) -> None:
    """Write a hardened systemd unit for serve (or --worker), then enable and start it."""
    from telecoder.settings import Settings

    settings = Settings.load()
    log = log_file.expanduser().absolute() if log_file else None
    paths = [settings.worktrees] if settings.workspace_dir else []
    paths += [p.expanduser().absolute() for p in writable or []]
    run_as = None if user or os.geteuid() == 0 else getpass.getuser()
    text = render(
        home=settings.home,
        worker=worker,
        user=user,
        command=executable(),
        writable=paths,
        log_file=log,
        run_as=run_as,
    )
    target = unit_dir(user) / unit_name(worker)
    if dry_run:
        typer.echo(f"# {target}")
        typer.echo(text, nl=False)
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(0o644)
    except PermissionError:
        raise BadInput(f"cannot write {target}: run it as root, or use --user") from None
    typer.echo(f"wrote {target}")
    if log:  # ReadWritePaths= needs it to exist
        log.parent.mkdir(parents=True, exist_ok=True)
    if not systemd_running():
        typer.echo(
            "systemd is not running on this machine: the unit is written but not enabled. "
            f"Where systemd runs: systemctl {'--user ' if user else ''}daemon-reload && "
            f"systemctl {'--user ' if user else ''}enable --now {target.name}",
            err=True,
        )
        raise typer.Exit(Exit.UNSUPPORTED)
    for args in (("daemon-reload",), ("enable", "--now", target.name)):
        if (code := _systemctl(user, *args)) != 0:
            raise typer.Exit(code)
    if user:
        typer.echo(
            f"to keep it running after you log out: loginctl enable-linger {getpass.getuser()}"
        )


@app.command()
def status(user: UserOption = False, worker: WorkerOption = False) -> None:
    """Show the unit's file and, where systemd runs, `systemctl status`."""
    target = unit_dir(user) / unit_name(worker)
    typer.echo(f"unit: {target} ({'present' if target.is_file() else 'not installed'})")
    if not systemd_running():
        typer.echo("systemd is not running on this machine: no service state to show", err=True)
        raise typer.Exit(Exit.UNSUPPORTED)
    raise typer.Exit(_systemctl(user, "status", "--no-pager", target.name))


@app.command()
def uninstall(user: UserOption = False, worker: WorkerOption = False) -> None:
    """Stop and disable the unit (where systemd runs) and remove its file."""
    target = unit_dir(user) / unit_name(worker)
    if not target.is_file():
        typer.echo(f"{target} is not installed", err=True)
        raise typer.Exit(Exit.NOT_FOUND)
    running = systemd_running()
    if running:
        _systemctl(user, "disable", "--now", target.name)
    target.unlink()
    typer.echo(f"removed {target}")
    if running:
        _systemctl(user, "daemon-reload")
    else:
        typer.echo("systemd is not running on this machine: nothing was stopped", err=True)
