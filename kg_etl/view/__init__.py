"""`kg-etl view`: a neighbourhood of the graph as one self-contained HTML page, with no server and no network.

model.py   the pydantic models the page reads (GraphView: nodes, edges, citations, chunk texts)
select.py  the walk from the start nodes that chooses them, through parameterised read statements
cite.py    which chunks a node cites and the spans of their text to highlight
render.py  the page: vendored JavaScript libraries, the page's script and the data inlined
page.html, page.css, page.js, vendor/   the page's own files and the libraries from npm
"""

from __future__ import annotations

from kg_etl.view.model import GraphView, Selection
from kg_etl.view.render import render_html, write_html
from kg_etl.view.select import select_view

__all__ = ["GraphView", "Selection", "render_html", "select_view", "write_html"]
