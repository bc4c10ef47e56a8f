"""``python -m kg_etl`` runs the command line."""

from kg_etl.cli import main

main()
