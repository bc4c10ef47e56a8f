"""QA validation: answer each question again from its chunk alone, judge agreement, check the evidence.

Two independent signals make the verdict: the model's judgement (a second pass that sees only the chunk
and the question) and a lexical check that the evidence quote really occurs in the chunk. A pair is
``valid`` only when both hold; the score blends them with the overlap of the two answers.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.extract.base import Extractor
from kg_etl.extract.qa import QAPair

__all__ = [
    "EVIDENCE_THRESHOLD",
    "VALIDATE",
    "Judgement",
    "Validation",
    "evidence_score",
    "judge",
    "token_f1",
    "validation_task",
]

# A quote counts as found when 90% of its words occur, in order, in one passage of the chunk: small models
# drop or change a word when copying, which is not a fabricated quote.
EVIDENCE_THRESHOLD = 0.9


class Judgement(BaseModel):
    """The second pass: its own answer from the excerpt, and whether the stated answer agrees."""

    model_config = ConfigDict(extra="forbid")

    answer: str = Field(
        min_length=1, max_length=200, description="the answer the excerpt gives, or 'not stated' if it does not answer"
    )
    verdict: Literal["agrees", "disagrees", "not_answerable"] = Field(
        description="agrees: the proposed answer matches the excerpt's; disagrees: it does not; "
        "not_answerable: the excerpt does not answer the question"
    )


class Validation(BaseModel):
    """The stored verdict on a QA pair."""

    model_config = ConfigDict(frozen=True)

    verdict: Literal["valid", "invalid"]
    score: float = Field(ge=0, le=1)
    judgement: str
    model_answer: str
    evidence_found: bool
    evidence_score: float = Field(ge=0, le=1)
    answer_overlap: float = Field(ge=0, le=1)


VALIDATE = Extractor(name="validate", version="1", schema=Judgement, task="")


def validation_task(pair: QAPair) -> str:
    """The instructions for judging one pair; they follow the shared chunk prefix."""
    return (
        f"Question: {pair.question}\nProposed answer: {pair.answer}\n\n"
        "Using only the excerpt, answer the question yourself, then judge whether the proposed answer agrees "
        'with yours. Answer as {"answer": "...", "verdict": "agrees" | "disagrees" | "not_answerable"}'
    )


def judge(pair: QAPair, judgement: Judgement, chunk_text: str) -> Validation:
    """Combine the model's judgement with the lexical evidence check into a verdict and a 0..1 score."""
    evidence = evidence_score(pair.evidence, chunk_text)
    overlap = token_f1(judgement.answer, pair.answer)
    agrees = judgement.verdict == "agrees"
    found = evidence >= EVIDENCE_THRESHOLD
    score = 0.5 * agrees + 0.3 * evidence + 0.2 * overlap
    return Validation(
        verdict="valid" if agrees and found else "invalid",
        score=round(score, 3),
        judgement=judgement.verdict,
        model_answer=judgement.answer,
        evidence_found=found,
        evidence_score=round(evidence, 3),
        answer_overlap=round(overlap, 3),
    )


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.findall(r"\w+", text)


def evidence_score(quote: str, text: str) -> float:
    """Share of the quote's words found, in order, in one passage of ``text`` (case and punctuation ignored).

    The passage is anchored on the quote's longest exact run, so words scattered over the chunk don't count.
    """
    quoted, source = _words(quote), _words(text)
    if not quoted or not source:
        return 0.0
    anchor = difflib.SequenceMatcher(None, quoted, source, autojunk=False).find_longest_match()
    start = max(0, anchor.b - anchor.a)
    passage = source[start : start + len(quoted) + 3]
    blocks = difflib.SequenceMatcher(None, quoted, passage, autojunk=False).get_matching_blocks()
    return sum(block.size for block in blocks) / len(quoted)


def token_f1(a: str, b: str) -> float:
    """SQuAD-style token F1 between two answers."""
    left, right = _words(a), _words(b)
    if not left or not right:
        return float(left == right)
    common = sum(min(left.count(w), right.count(w)) for w in set(left))
    if common == 0:
        return 0.0
    precision, recall = common / len(left), common / len(right)
    return 2 * precision * recall / (precision + recall)
