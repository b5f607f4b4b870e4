"""``python -m telecoder``."""

from telecoder.launch import main

main()
