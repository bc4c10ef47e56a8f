"""The gold set: short documents with what a careful reader extracts from each, and how kg-etl measures up.

Every extractor is run over every document (one chunk each), with the validation pass, and scored:

- facts: the share of extracted facts supported by their text, by a lexical check (the statement's content
  words occur in the text) and by the model as judge (asked, fact by fact, whether the text states it);
  their triples against the gold triples, with the WebNLG scorer;
- categories: top-1 accuracy against the gold labels; taxonomy: edge and node F1 against the gold tree;
  keywords: precision against the gold terms;
- QA: evidence quoted verbatim, round-trip agreement (the question answered again from the text alone gives
  the stated answer), pairs judged valid, near-duplicate questions; and the judge itself on the gold
  questions: answerable ones answered correctly, unanswerable ones refused;
- replies: valid on the first try, after retries, or failed, per extractor.
"""

from __future__ import annotations

import itertools
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kg_etl.errors import ConfigError
from kg_etl.eval.session import EvalItem, EvalModel, FailureSample, Outcomes, RunFigures
from kg_etl.eval.triples import Scores, score_triples
from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.facts import Fact, Facts
from kg_etl.extract.qa import QA, QAPair, QAPairs
from kg_etl.extract.taxonomy import Taxonomy
from kg_etl.extract.validate import (
    VALIDATE,
    Judgement,
    Validation,
    Validations,
    answer_task,
    answers_agree,
    content_words,
    words,
)
from kg_etl.registry import ExtractOptions, select_extractors

__all__ = [
    "DUPLICATE_JACCARD",
    "LEXICAL_SUPPORT",
    "GoldDocument",
    "GoldFact",
    "GoldQuestion",
    "GoldReport",
    "GoldScores",
    "GoldUnanswerable",
    "default_gold_dir",
    "load_gold",
    "run_gold",
    "score_gold",
]

LEXICAL_SUPPORT = 0.8  # share of a statement's content words that must occur in its text
DUPLICATE_JACCARD = 0.7  # word overlap at which two questions ask the same thing


class GoldQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str
    answer: str
    evidence: str = Field(description="copied verbatim from the text")


class GoldUnanswerable(BaseModel):
    """A question the text does not answer: the judge should say so."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str


class GoldFact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    triple: tuple[str, str, str]


class GoldDocument(BaseModel):
    """One document of the gold set, as its TOML file has it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    text: str
    categories: list[str] = Field(min_length=1)
    keywords: list[str] = Field(min_length=1)
    taxonomy: list[list[str]] = Field(min_length=1, description="paths, broadest topic first")
    facts: list[GoldFact] = Field(min_length=1)
    questions: list[GoldQuestion] = Field(min_length=1)
    unanswerable: list[GoldUnanswerable] = Field(default_factory=list)


def default_gold_dir() -> Path:
    """The gold set shipped with kg-etl."""
    return Path(str(resources.files("kg_etl") / "data" / "gold"))


def load_gold(folder: Path) -> list[GoldDocument]:
    """Every ``*.toml`` document of a gold set, by file name.

    Raises:
        ConfigError: the folder holds no documents, or one cannot be read or is not in the gold shape.
    """
    paths = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    if not paths:
        raise ConfigError(f"{folder}: no gold documents (*.toml) here; give the gold set's folder")
    documents = []
    for path in paths:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            documents.append(GoldDocument(id=path.stem, **data))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: cannot read this gold document ({e})") from e
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"{path}: {where}: {first['msg']}; see the gold set's README") from e
    return documents


class GoldScores(BaseModel):
    """The gold-set metrics of one model (each a share between 0 and 1, None where nothing was measured)."""

    facts: int = Field(description="facts extracted")
    facts_supported_lexical: float | None
    facts_supported_judge: float | None
    facts_judge_failed: int = Field(description="facts the judge gave no valid verdict on")
    triples: dict[str, Scores] = Field(description="triples against the gold triples, WebNLG scoring")
    category_accuracy: float | None = Field(description="first label among the gold categories")
    taxonomy_edge_f1: float | None
    taxonomy_node_f1: float | None
    keyword_precision: float | None
    qa_pairs: int
    qa_evidence_verbatim: float | None
    qa_round_trip: float | None = Field(description="answered again from the text alone, the same answer")
    qa_valid: float | None
    qa_near_duplicates: float | None
    judge_answerable_correct: float | None = Field(description="gold questions answered with the gold answer")
    judge_unanswerable_refused: float | None = Field(description="unanswerable gold questions declared so")
    outcomes: dict[str, Outcomes]


class GoldReport(BaseModel):
    """A gold-set evaluation: the model, what it scored, and what it cost."""

    model: str
    documents: int
    scores: GoldScores
    failures: list[FailureSample] = Field(default_factory=list, description="the commonest reasons, with a reply")
    figures: RunFigures


class _FactCheck(BaseModel):
    """The judge's verdict on one extracted fact."""

    model_config = ConfigDict(extra="forbid")

    supported: bool = Field(description="whether the excerpt states the statement")


def _fact_check_task(statement: str) -> str:
    return (
        f"Statement: {statement}\n\n"
        'Using only the excerpt, is the statement stated in it? Answer with JSON: "supported" is true if the '
        "excerpt states it, false if it does not or says otherwise."
    )


# Every extractor but the chunk summaries (the gold set has no gold summaries to score them against).
_EXTRACTORS = ("facts", "taxonomy", "categories", "keywords", "qa", "validate")


def run_gold(
    model: EvalModel,
    documents: Sequence[GoldDocument],
    categories: Sequence[str],
    on_progress: Callable[[int, int], None] | None = None,
) -> GoldReport:
    """Every extractor and the validation pass over the gold documents, the judge's checks, and the scores."""
    extractors = select_extractors(_EXTRACTORS, ExtractOptions(categories=tuple(categories)))
    items = [EvalItem(id=doc.id, text=doc.text) for doc in documents]
    outs = model.extract(items, extractors, on_progress=on_progress)
    statements = [(item, fact.statement) for item, out in zip(items, outs, strict=True) for fact in _facts(out)]
    verdicts = model.ask([(item, _fact_check_task(s)) for item, s in statements], _FactCheck)
    gold_questions = [(item, q) for item, doc in zip(items, documents, strict=True) for q in _all_questions(doc)]
    answers = model.ask([(item, answer_task(q.question)) for item, q in gold_questions], Judgement)
    scores = score_gold(
        documents,
        outs,
        [v.supported if isinstance(v, _FactCheck) else None for v in verdicts],
        [a if isinstance(a, Judgement) else None for a in answers],
        {name: Outcomes.of(counts) for name, counts in model.outcomes.items()},
    )
    return GoldReport(
        model=model.name,
        documents=len(documents),
        scores=scores,
        failures=FailureSample.of(model.failures),
        figures=model.figures(len(items)),
    )


def _all_questions(doc: GoldDocument) -> list[GoldQuestion | GoldUnanswerable]:
    return [*doc.questions, *doc.unanswerable]


def _facts(out: ChunkExtraction) -> list[Fact]:
    result = out.results.get("facts")
    return list(result.facts) if isinstance(result, Facts) else []


def score_gold(
    documents: Sequence[GoldDocument],
    outs: Sequence[ChunkExtraction],
    fact_verdicts: Sequence[bool | None],
    answers: Sequence[Judgement | None],
    outcomes: dict[str, Outcomes],
) -> GoldScores:
    """The metrics, from the extractions (aligned with ``documents``), the judge's verdict on each extracted
    fact (in order, None where it gave none) and its answers to each document's gold questions (in order).
    """
    facts = [(doc, fact) for doc, out in zip(documents, outs, strict=True) for fact in _facts(out)]
    judged = [v for v in fact_verdicts if v is not None]
    candidates = [
        [(f.triple.subject, f.triple.predicate, f.triple.object) for f in _facts(out) if f.triple is not None]
        for out in outs
    ]
    qa = [(doc, pair, val) for doc, out in zip(documents, outs, strict=True) for pair, val in _pairs(out)]
    answerable, unanswerable = _judge_on_gold(documents, answers)
    return GoldScores(
        facts=len(facts),
        facts_supported_lexical=_share(_lexically_supported(f.statement, doc.text) for doc, f in facts),
        facts_supported_judge=_share(judged),
        facts_judge_failed=len(fact_verdicts) - len(judged),
        triples=score_triples([[f.triple for f in doc.facts] for doc in documents], candidates),
        category_accuracy=_share(_first_category_right(doc, out) for doc, out in zip(documents, outs, strict=True)),
        taxonomy_edge_f1=_micro_f1(_taxonomy_sets(documents, outs, _edges)),
        taxonomy_node_f1=_micro_f1(_taxonomy_sets(documents, outs, _nodes)),
        keyword_precision=_share(
            _keyword_matches(term, doc.keywords)
            for doc, out in zip(documents, outs, strict=True)
            for term in _keywords(out)
        ),
        qa_pairs=len(qa),
        qa_evidence_verbatim=_share(_verbatim(pair.evidence, doc.text) for doc, pair, _ in qa),
        qa_round_trip=_share(val.judgement == "agrees" for _, _, val in qa if val is not None),
        qa_valid=_share(val.verdict == "valid" for _, _, val in qa if val is not None),
        qa_near_duplicates=_near_duplicates([[pair.question for pair, _ in _pairs(out)] for out in outs]),
        judge_answerable_correct=answerable,
        judge_unanswerable_refused=unanswerable,
        outcomes=outcomes,
    )


# -- metrics -------------------------------------------------------------------------------------------------


def _share(flags: Iterable[bool]) -> float | None:
    values = list(flags)
    return round(sum(values) / len(values), 3) if values else None


def _norm(text: str) -> str:
    """A name for comparison: case, punctuation and "&" versus "and" do not make two names differ."""
    return " ".join(words(unicodedata.normalize("NFKC", text).replace("&", " and ")))


def _lexically_supported(statement: str, text: str) -> bool:
    stated, present = content_words(statement), set(words(text))
    return bool(stated) and sum(w in present for w in stated) / len(stated) >= LEXICAL_SUPPORT


def _first_category_right(doc: GoldDocument, out: ChunkExtraction) -> bool:
    result = out.results.get("categories")
    labels: list[str] = list(getattr(result, "labels", []) or [])
    return bool(labels) and _norm(labels[0]) in {_norm(c) for c in doc.categories}


def _paths(out: ChunkExtraction) -> list[list[str]]:
    result = out.results.get("taxonomy")
    return [[node.name for node in path.nodes] for path in result.paths] if isinstance(result, Taxonomy) else []


def _edges(paths: Iterable[Sequence[str]]) -> set[tuple[str, ...]]:
    return {(_norm(a), _norm(b)) for path in paths for a, b in itertools.pairwise(path)}


def _nodes(paths: Iterable[Sequence[str]]) -> set[tuple[str, ...]]:
    return {(_norm(name),) for path in paths for name in path}


def _taxonomy_sets(
    documents: Sequence[GoldDocument],
    outs: Sequence[ChunkExtraction],
    parts: Callable[[Iterable[Sequence[str]]], set[tuple[str, ...]]],
) -> list[tuple[set[tuple[str, ...]], set[tuple[str, ...]]]]:
    return [(parts(doc.taxonomy), parts(_paths(out))) for doc, out in zip(documents, outs, strict=True)]


def _micro_f1(pairs: Sequence[tuple[set[tuple[str, ...]], set[tuple[str, ...]]]]) -> float | None:
    """F1 over all documents together: (gold, predicted) sets of each."""
    gold = sum(len(g) for g, _ in pairs)
    predicted = sum(len(p) for _, p in pairs)
    if not gold or not predicted:
        return None if not gold else 0.0
    common = sum(len(g & p) for g, p in pairs)
    return round(2 * common / (gold + predicted), 3)


def _keywords(out: ChunkExtraction) -> list[str]:
    result = out.results.get("keywords")
    return [k.term for k in getattr(result, "keywords", [])]


def _keyword_matches(term: str, gold: Sequence[str]) -> bool:
    """The same term, or one that contains the other as whole words ("Calvin cycle" and "the Calvin cycle")."""
    norm = f" {_norm(term)} "
    return norm.strip() != "" and any(norm in f" {_norm(g)} " or f" {_norm(g)} " in norm for g in gold)


def _verbatim(quote: str, text: str) -> bool:
    """Copied word for word (whitespace and case aside): stricter than the validation pass's 90% rule."""
    quoted = _squash(quote)
    return bool(quoted) and quoted in _squash(text)


def _squash(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split()).strip(" .")


def _pairs(out: ChunkExtraction) -> list[tuple[QAPair, Validation | None]]:
    pairs, validations = out.results.get(QA.name), out.results.get(VALIDATE.name)
    if not isinstance(pairs, QAPairs):
        return []
    items = validations.items if isinstance(validations, Validations) else [None] * len(pairs.pairs)
    return list(zip(pairs.pairs, items, strict=True))


def _near_duplicates(questions_by_doc: Sequence[Sequence[str]]) -> float | None:
    """Share of questions that ask what an earlier question of the same document asked."""
    total = duplicates = 0
    for questions in questions_by_doc:
        seen: list[set[str]] = []
        for question in questions:
            tokens = set(content_words(question))
            total += 1
            duplicates += any(len(tokens & s) / max(1, len(tokens | s)) >= DUPLICATE_JACCARD for s in seen)
            seen.append(tokens)
    return round(duplicates / total, 3) if total else None


def _judge_on_gold(
    documents: Sequence[GoldDocument], answers: Sequence[Judgement | None]
) -> tuple[float | None, float | None]:
    """How the judge did on the gold questions: (answerable ones right, unanswerable ones refused)."""
    right: list[bool] = []
    refused: list[bool] = []
    replies = iter(answers)
    for doc in documents:
        for question in doc.questions:
            reply = next(replies)
            right.append(reply is not None and reply.answerable and answers_agree(reply.answer, question.answer))
        for _ in doc.unanswerable:
            reply = next(replies)
            refused.append(reply is not None and not reply.answerable)
    return _share(right), _share(refused)
