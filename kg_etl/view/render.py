"""A ``GraphView`` as one self-contained HTML page: the libraries, the page's script and the data inlined.

Nothing is fetched when the page is opened: the JavaScript libraries are vendored into the package from the npm
registry at the versions pinned in package.json (``VENDORED``; a test keeps each copy byte-identical to
``npm ci``'s), and the page's Content-Security-Policy allows no connection at all and only the scripts it was
written with (by their sha256).

The data is JSON in a ``<script type="application/json">`` element, which the browser never runs. Text from
PDFs cannot end that element or open a comment in it: every ``<``, ``>`` and ``&`` in the JSON is written as a
``\\u003c``-style escape, which JSON.parse reads back as the same character, so ``</script>`` or ``<!--``
in a chunk is only text. The page's script puts data into the page as text (``textContent``), never as markup.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from kg_etl import __version__
from kg_etl.export import write_atomically
from kg_etl.models import text_of
from kg_etl.view.model import GraphView

__all__ = ["ASSETS", "VENDORED", "Vendored", "render_html", "script_json", "write_html"]

ASSETS = files("kg_etl.view")


@dataclass(frozen=True)
class Vendored:
    """A JavaScript file copied from an npm package: its file in kg_etl/view/vendor, and where npm puts it."""

    package: str
    file: str
    dist_path: str

    def text(self) -> str:
        return (ASSETS / "vendor" / self.file).read_text(encoding="utf-8")


# In the order the page loads them: d3-force finds its three d3 modules as globals.
VENDORED = (
    Vendored("cytoscape", "cytoscape.min.js", "dist/cytoscape.min.js"),
    Vendored("d3-dispatch", "d3-dispatch.min.js", "dist/d3-dispatch.min.js"),
    Vendored("d3-quadtree", "d3-quadtree.min.js", "dist/d3-quadtree.min.js"),
    Vendored("d3-timer", "d3-timer.min.js", "dist/d3-timer.min.js"),
    Vendored("d3-force", "d3-force.min.js", "dist/d3-force.min.js"),
)

# Characters that must not appear raw inside a <script> element's JSON: < > & end it or open a comment, and
# U+2028/U+2029 are line breaks to older JavaScript parsers.
_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                               "\u2029": "\\u2029"})  # fmt: skip
_SCRIPT_END = re.compile(r"</script|<!--", re.IGNORECASE)
_SLOT = re.compile(r"@@([A-Z]+)@@")


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element, whatever text its strings hold."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).translate(_JSON_ESCAPES)


def render_html(view: GraphView) -> str:
    """The page for ``view``: one HTML document that needs nothing else."""
    scripts = [lib.text() for lib in VENDORED] + [(ASSETS / "page.js").read_text(encoding="utf-8")]
    for script in scripts:
        if _SCRIPT_END.search(script):  # would end the element early; not so in any pinned version
            raise RuntimeError("a vendored script holds '</script' or '<!--' and cannot be inlined")
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    csp = (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src data: blob:; "
           "base-uri 'none'; form-action 'none'")  # fmt: skip
    slots = {
        "CSP": csp,
        "TITLE": html.escape(text_of(view.title)),
        "VERSION": html.escape(__version__),
        "STYLE": (ASSETS / "page.css").read_text(encoding="utf-8"),
        "DATA": script_json(view.model_dump(mode="json")),
        "SCRIPTS": "\n".join(f"<script>{s}</script>" for s in scripts),
    }
    template = (ASSETS / "page.html").read_text(encoding="utf-8")
    return _SLOT.sub(lambda m: slots[m[1]], template)  # one pass: no slot's value is read for slots


def write_html(view: GraphView, target: Path) -> Path:
    """Write the page to ``target`` whole or not at all (see ``kg_etl.export.write_atomically``); return it.

    Raises:
        ConfigError: the target is not a regular file, its folder is missing, or writing failed.
    """
    page = render_html(view)
    # A lone surrogate (a file name that was not UTF-8) becomes a \\udcff escape, which inside the JSON is
    # the same character again.
    write_atomically(target, lambda f: f.write(page), errors="backslashreplace")
    return target
