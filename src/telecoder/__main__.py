"""``python -m telecoder``."""

from telecoder.cli import main

main()
