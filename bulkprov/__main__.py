"""``python -m bulkprov``."""

from .cli import main

main()
