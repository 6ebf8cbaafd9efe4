"""``python -m bulkprov``."""

from bulkprov.cli import main

main()
