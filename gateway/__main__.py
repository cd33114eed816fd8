"""`python -m gateway` runs the progressd command line."""

from gateway.cli import main

main()
