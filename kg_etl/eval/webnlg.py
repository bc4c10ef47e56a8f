"""WebNLG 2020 text-to-RDF: the facts extractor's triples against the challenge's reference triples.

Each entry's text is one chunk for the facts extractor; its triples are the candidates, scored with
``kg_etl.eval.triples`` (the challenge's definitions, written afresh: the official scorer is GPL-3) and
written in the challenge's XML format, so anyone can check a score with the official script.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.errors import ConfigError
from kg_etl.eval.session import EvalItem, EvalModel, FailureSample, Outcomes, RunFigures
from kg_etl.eval.triples import Scores, Triple, score_triples
from kg_etl.extract.facts import FACTS, Facts

__all__ = ["WebNLGEntry", "WebNLGReport", "candidate_triples", "read_webnlg", "run_webnlg", "write_candidates"]


class WebNLGEntry(BaseModel):
    """One benchmark entry: its id, its text, and the reference triples the text verbalises."""

    model_config = ConfigDict(frozen=True)

    eid: str
    text: str
    references: list[Triple] = Field(description="subject, predicate, object, as the challenge writes them")


class WebNLGReport(BaseModel):
    """A WebNLG evaluation: the model, the scores under each matching type, the cost, and the candidates."""

    model: str
    entries: int
    scores: dict[str, Scores]
    outcomes: Outcomes
    failures: list[FailureSample] = Field(default_factory=list, description="the commonest reasons, with a reply")
    figures: RunFigures
    candidates: list[list[Triple]] = Field(default_factory=list, exclude=True)


def read_webnlg(path: Path) -> list[WebNLGEntry]:
    """The entries of a WebNLG benchmark file, in file order: the first text of each, its modified triples.

    Raises:
        ConfigError: the file cannot be read, is not WebNLG XML, or holds no entry with a text and triples.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise ConfigError(f"{path}: cannot read this as WebNLG XML ({e}); give the challenge's benchmark file") from e
    entries: list[WebNLGEntry] = []
    for entry in root.iter("entry"):
        lex = next((node.text for node in entry.iter("lex") if (node.text or "").strip()), None)
        triples = [_triple(node.text or "") for node in entry.iter("mtriple")]
        if lex is not None and triples:
            entries.append(
                WebNLGEntry(eid=entry.get("eid", str(len(entries) + 1)), text=lex.strip(), references=triples)
            )
    if not entries:
        raise ConfigError(f"{path}: no <entry> with a <lex> text and <mtriple> references; is it a WebNLG file?")
    return entries


def _triple(line: str) -> Triple:
    parts = [part.strip() for part in line.split(" | ")]
    if len(parts) != 3:
        parts = [part.strip() for part in line.split("|")]
    return (parts[0], parts[1], " | ".join(parts[2:])) if len(parts) >= 3 else (line.strip(), "", "")


def write_candidates(entries: Sequence[WebNLGEntry], candidates: Sequence[Sequence[Triple]], path: Path) -> None:
    """The candidates in the challenge's XML format (``generatedtripleset`` / ``gtriple``), entries in order."""
    root = ET.Element("benchmark")
    listing = ET.SubElement(root, "entries")
    for entry, triples in zip(entries, candidates, strict=True):
        node = ET.SubElement(listing, "entry", {"eid": entry.eid})
        generated = ET.SubElement(node, "generatedtripleset")
        for triple in triples:
            ET.SubElement(generated, "gtriple").text = " | ".join(_field(part) for part in triple)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _field(text: str) -> str:
    """One triple part on one line, without the separator the format splits on."""
    return " ".join(text.replace("|", "/").split())


def candidate_triples(result: object) -> list[Triple]:
    """The triples of a facts result, in order, without repeats (a fact without a triple gives none)."""
    if not isinstance(result, Facts):
        return []
    triples = [(f.triple.subject, f.triple.predicate, f.triple.object) for f in result.facts if f.triple is not None]
    return list(dict.fromkeys(triples))


def run_webnlg(
    model: EvalModel, entries: Sequence[WebNLGEntry], on_progress: Callable[[int, int], None] | None = None
) -> WebNLGReport:
    """The facts extractor over every entry's text, its triples scored against the references."""
    items = [EvalItem(id=entry.eid, text=entry.text) for entry in entries]
    outs = model.extract(items, [FACTS], on_progress=on_progress)
    candidates = [candidate_triples(out.results.get(FACTS.name)) for out in outs]
    scores = score_triples([entry.references for entry in entries], candidates)
    outcomes = Outcomes.of(model.outcomes.get(FACTS.name, Counter()))
    return WebNLGReport(
        model=model.name,
        entries=len(entries),
        scores=scores,
        outcomes=outcomes,
        failures=FailureSample.of(model.failures),
        figures=model.figures(len(items)),
        candidates=candidates,
    )
