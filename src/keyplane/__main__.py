"""`python -m keyplane` is the `keyplane` command."""

from keyplane.cli import main

main()
