"""Where results go: ``local`` (push the branch) and ``github`` (push and open a PR)."""
