"""Where engine processes run: ``local`` (a subprocess in the worktree)."""
