"""TeleCoder's own directories and files are 0700 and 0600 whatever the process umask."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from telecoder import private

pytestmark = pytest.mark.usefixtures("loose_umask")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_make_dir_makes_every_missing_directory_private(tmp_path: Path) -> None:
    (tmp_path / "theirs").mkdir(mode=0o755)
    made = private.make_dir(tmp_path / "theirs" / "a" / "b")
    assert made.is_dir()
    assert (mode(tmp_path / "theirs" / "a"), mode(made)) == (0o700, 0o700)
    assert mode(tmp_path / "theirs") == 0o755  # not ours to change
    assert private.make_dir(made) == made  # and again: nothing to do


def test_files_are_created_private_and_existing_ones_kept(tmp_path: Path) -> None:
    new = private.create_file(tmp_path / "db")
    assert (mode(new), new.read_bytes()) == (0o600, b"")
    kept = tmp_path / "kept"
    kept.write_text("data")
    private.create_file(kept)
    assert kept.read_text() == "data"
    with private.open_append(tmp_path / "log") as f:
        f.write("one\n")
    with private.open_append(tmp_path / "log") as f:
        f.write("two\n")
    assert (tmp_path / "log").read_text() == "one\ntwo\n"
    assert mode(tmp_path / "log") == 0o600
