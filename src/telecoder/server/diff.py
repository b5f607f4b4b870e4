"""The diff of a session's branch: see :mod:`telecoder.diffs` (below the server, so a best-of-N
run's judge reads the candidates' diffs the same way)."""

from telecoder.diffs import Diff, DiffSource, DiffUnavailable, git_diff_source

__all__ = ["Diff", "DiffSource", "DiffUnavailable", "git_diff_source"]
