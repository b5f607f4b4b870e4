"""A local Debian bookworm base image for building the Dockerfile where no registry is reachable.

``podman build`` cannot pull ``python:3.11-slim`` here, but Debian's package mirror answers: the
base is made with ``debootstrap --variant=minbase`` from the mirror named in the machine's apt
sources (read at run time), with python3 and python3-venv (Debian's 3.11) and the packages the
Dockerfile installs (so its ``apt-get install`` finds them there: the build's longest step is then
PyPI's), and ``podman import``-ed as ``localhost/telecoder-base:bookworm``.

The machine's own certificate authorities (``/usr/local/share/ca-certificates``: a TLS-inspecting
egress proxy's) are added to the base, as the host trusts them, so pip in the build reaches PyPI.

Made once: the image carries a label with the hash of everything it is made from (suite, packages,
mirror, those authorities), and one with that label is reused, in this and later sessions.
Needs, as root: ``apt-get install -y debootstrap podman runc`` (``make test`` installs them).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from telecoder.protocols import Confinement
from telecoder.runtimes.docker import ulimits

BASE_IMAGE = "localhost/telecoder-base:bookworm"
SUITE = "bookworm"
PACKAGES = (
    "python3",
    "python3-venv",
    "ca-certificates",
    # what the Dockerfile's apt-get installs (it still runs: a misspelt package still fails it)
    "bubblewrap",
    "git",
    "openssh-client",
)
LABEL = "telecoder.base-key"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def debian_mirror() -> str:
    """The URI of the machine's Debian archive for ``SUITE`` (one-line or deb822 sources)."""
    files: list[Path] = []
    for source in APT_SOURCES:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix in {".list", ".sources"})
        elif source.is_file():
            files.append(source)
    for file in files:
        text = file.read_text(errors="replace")
        if file.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (
                        line.partition(":")
                        for line in stanza.splitlines()
                        if line[:1] not in {"#", " ", "\t"} and ":" in line
                    )
                }
                if (
                    "deb" in fields.get("types", "").split()
                    and SUITE in fields.get("suites", "").split()
                ):
                    uri: str = fields["uris"].split()[0]
                    return uri.rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1].rstrip("/")
    pytest.fail(f"no Debian {SUITE} archive in the machine's apt sources ({APT_SOURCES})")


def podman_ulimits() -> list[str]:
    """``--ulimit`` options at or below this process's hard limits: podman's defaults are above
    them and runc cannot raise a limit without CAP_SYS_RESOURCE."""
    options: list[str] = []
    for limit in ulimits(Confinement(label="image")):
        options += ["--ulimit", f"{limit['Name']}={limit['Soft']}:{limit['Hard']}"]
    return options


def _key(mirror: str) -> str:
    digest = hashlib.sha256(f"{SUITE}\n{' '.join(PACKAGES)}\n{mirror}\n".encode())
    for ca in sorted(LOCAL_CAS.glob("*.crt")):
        digest.update(ca.read_bytes())
    return digest.hexdigest()[:16]


def _label(image: str) -> str | None:
    found = subprocess.run(
        ["podman", "image", "inspect", "--format", f'{{{{index .Labels "{LABEL}"}}}}', image],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() if found.returncode == 0 else None


def missing_tools() -> str | None:
    for tool in ("debootstrap", "podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y debootstrap podman runc)"
    if os.geteuid() != 0:
        return "debootstrap and the image build run as root"
    return None


def run(command: list[str], timeout: float, **kwargs: object) -> str:
    """Run ``command``; fail the test with its output's tail if it fails."""
    done = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command[:3])}… exited {done.returncode}:\n{done.stdout[-4000:]}")
    out: str = done.stdout
    return out


def debian_base() -> str:
    """``BASE_IMAGE``, made now unless one with the same key is there already."""
    if (problem := missing_tools()) is not None:
        pytest.fail(f"the container image test needs: {problem}")
    mirror = debian_mirror()
    key = _key(mirror)
    if _label(BASE_IMAGE) == key:
        return BASE_IMAGE
    with tempfile.TemporaryDirectory(prefix="tc-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "root"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                mirror,
            ],
            timeout=1200,
        )
        cas = sorted(LOCAL_CAS.glob("*.crt"))
        if cas:
            for ca in cas:
                shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
            run(["chroot", str(root), "update-ca-certificates"], timeout=120)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        # the stale base, if any, goes: a new one under its name would leave it unnamed, kept
        subprocess.run(["podman", "rmi", "--force", BASE_IMAGE], capture_output=True, check=False)
        label = f"--change 'LABEL {LABEL}={key}'"
        pipeline = f"tar -C {root} -c . | podman import --quiet {label} - {BASE_IMAGE}"
        run(["bash", "-o", "pipefail", "-c", pipeline], timeout=600)
    return BASE_IMAGE
