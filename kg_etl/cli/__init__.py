"""The ``kg-etl`` command line: parse options, call the library, render with rich.

The only package that imports click or rich. Every ``KgEtlError`` is caught once, in ``app``, and printed
as one line; anything else is a bug and keeps its traceback. Commands import the library lazily, so
``kg-etl --help`` loads neither pydantic models, the graph driver, LangChain nor llama.cpp.

    app.py       the group, exit codes, consoles, the config file as click's default map, graph options
    ingest.py    ingest, its progress display and end-of-run summary
    data.py      export, remove, schema, stats, query
    evaluate.py  eval webnlg, eval gold
    system.py    graph (the local server), models, chunks, doctor, bench, home
    settings.py  init, config show
    view.py      view (the graph as an HTML page)
"""

from __future__ import annotations

from kg_etl.cli import data, evaluate, ingest, settings, system, view
from kg_etl.cli.app import cli, main

__all__ = ["cli", "data", "evaluate", "ingest", "main", "settings", "system", "view"]
