"""The sandbox gives its uid the worktree: everything below it, links changed, never followed."""

from __future__ import annotations

import os
from pathlib import Path

from telecoder.runtimes.sandbox import chown_tree

UID = 61_234


def test_the_whole_tree_changes_owner_and_a_link_out_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "host-secret"
    outside.write_text("host")
    before = os.lstat(outside)
    tree = tmp_path / "worktree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file.py").write_text("x")
    (tree / ".venv").mkdir()
    (tree / ".venv" / "escape").symlink_to(outside)  # an agent's link to a host file
    (tree / "dangling").symlink_to(tmp_path / "nowhere")

    chown_tree(tree, UID, UID)

    owned = [tree, *tree.rglob("*")]
    assert len(owned) == 7
    assert all((os.lstat(p).st_uid, os.lstat(p).st_gid) == (UID, UID) for p in owned)
    after = os.lstat(outside)
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)


def test_a_missing_root_is_nothing_to_do(tmp_path: Path) -> None:
    chown_tree(tmp_path / "gone", UID, UID)
    assert not (tmp_path / "gone").exists()
