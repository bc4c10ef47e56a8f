"""QA validation: answer each question again from its chunk alone, and check the pair against the chunk.

The second pass sees the chunk and the question only, never the proposed answer: a weak judge shown an
answer agrees with it (one agreed with 21 of 25 junk pairs), so agreement is not asked for but measured,
as the overlap of its answer with the stated one (a round trip). A pair is ``valid`` only when all hold:

- it has content: a question of words ending in "?", an answer with a word in it, a quote of at least
  ``MIN_QUOTE_WORDS`` words (two empty answers do not "agree", a one-word quote proves nothing);
- the quote occurs in the chunk (``evidence_score``), and the answer is grounded in it (its words are);
- the judge found the question answerable and its answer agrees (token F1 >= ``AGREEMENT_F1``).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.extract.base import Ask, ChunkExtraction, Extractor
from kg_etl.extract.qa import QA, QAPair, QAPairs

__all__ = [
    "AGREEMENT_F1",
    "EVIDENCE_THRESHOLD",
    "MIN_QUOTE_WORDS",
    "VALIDATE",
    "Judgement",
    "Validation",
    "Validations",
    "answer_task",
    "answers_agree",
    "content_words",
    "evidence_score",
    "judge",
    "token_f1",
    "validation_task",
    "words",
]

# A quote counts as found when 90% of its words occur, in order, in one passage of the chunk: small models
# drop or change a word when copying, which is not a fabricated quote.
EVIDENCE_THRESHOLD = 0.9
MIN_QUOTE_WORDS = 4
AGREEMENT_F1 = 0.5  # SQuAD's usual bar for "the same answer, worded a little differently"
GROUNDED = 0.5  # share of the answer's words that must occur in the chunk


class Judgement(BaseModel):
    """The second pass: its own answer to the question, from the excerpt alone."""

    model_config = ConfigDict(extra="forbid")

    answerable: bool = Field(description="whether the excerpt answers the question")
    answer: str = Field(
        min_length=1, max_length=200, description="the answer the excerpt gives, or 'not stated' if it does not answer"
    )


class Validation(BaseModel):
    """The stored verdict on a QA pair."""

    model_config = ConfigDict(frozen=True)

    verdict: Literal["valid", "invalid"]
    score: float = Field(ge=0, le=1)
    judgement: str = Field(description="agrees, disagrees (the judge's answer differs) or not_answerable")
    model_answer: str
    evidence_found: bool
    evidence_score: float = Field(ge=0, le=1)
    answer_overlap: float = Field(ge=0, le=1)


class Validations(BaseModel):
    """The verdicts on a chunk's QA pairs, aligned with them (None where the judgement itself failed)."""

    items: list[Validation | None]


def _asks(out: ChunkExtraction, chunk_text: str) -> list[Ask]:
    """One question per QA pair of the chunk; each reply becomes that pair's verdict in ``Validations``."""
    pairs = out.results.get(QA.name)
    if not isinstance(pairs, QAPairs):
        return []
    validations = Validations(items=[None] * len(pairs.pairs))
    out.results[VALIDATE.name] = validations

    def accept(i: int) -> Callable[[BaseModel], None]:
        def verdict(result: BaseModel) -> None:
            assert isinstance(result, Judgement)
            validations.items[i] = judge(pairs.pairs[i], result, chunk_text)

        return verdict

    return [Ask(validation_task(pair), (pair.question, pair.answer), accept(i)) for i, pair in enumerate(pairs.pairs)]


VALIDATE = Extractor(name="validate", version="2", schema=Judgement, task="", follow=_asks, label="validation")


def validation_task(pair: QAPair) -> str:
    """The instructions for answering one pair's question; they follow the shared chunk prefix."""
    return answer_task(pair.question)


def answer_task(question: str) -> str:
    """The instructions for answering a question from the excerpt alone (the judge's half of validation)."""
    return (
        f"Question: {question}\n\n"
        'Using only the excerpt, answer the question in a few words. Answer with JSON: "answerable" is true '
        'if the excerpt answers the question, else false; "answer" is the answer, or "not stated".'
    )


def judge(pair: QAPair, judgement: Judgement, chunk_text: str) -> Validation:
    """The verdict on a pair, from the judge's own answer and lexical checks against the chunk; a 0..1 score."""
    evidence = evidence_score(pair.evidence, chunk_text) if len(words(pair.evidence)) >= MIN_QUOTE_WORDS else 0.0
    overlap = token_f1(judgement.answer, pair.answer) if judgement.answerable else 0.0
    grounded = _grounded(pair.answer, chunk_text)
    # Agreement is judged on content words: "in March" and "in November" share a word, not an answer.
    agrees = judgement.answerable and answers_agree(judgement.answer, pair.answer)
    found = evidence >= EVIDENCE_THRESHOLD
    content = _has_content(pair)
    score = (0.4 * agrees + 0.3 * evidence + 0.2 * overlap + 0.1 * grounded) if content else 0.0
    return Validation(
        verdict="valid" if content and agrees and found and grounded >= GROUNDED else "invalid",
        score=round(score, 3),
        judgement="not_answerable" if not judgement.answerable else "agrees" if agrees else "disagrees",
        model_answer=judgement.answer,
        evidence_found=found,
        evidence_score=round(evidence, 3),
        answer_overlap=round(overlap, 3),
    )


def _has_content(pair: QAPair) -> bool:
    """A question of at least three words ending in "?", and an answer with at least one word."""
    question = pair.question.strip()
    return len(words(question)) >= 3 and question.endswith("?") and bool(words(pair.answer))


def _grounded(answer: str, chunk_text: str) -> float:
    """Share of the answer's content words that occur in the chunk: an answer not in the text was made up."""
    answer_words = content_words(answer)
    if not answer_words:
        return 0.0
    present = set(words(chunk_text))
    return sum(w in present for w in answer_words) / len(answer_words)


# Words that carry no answer by themselves; SQuAD drops the articles, these few more matter for short answers.
_FUNCTION_WORDS = frozenset((
    "a", "an", "the", "in", "on", "at", "of", "to", "for", "by", "from", "with", "and", "or", "is", "are", "was",
    "were", "be", "been", "it", "its", "this", "that", "as",
))  # fmt: skip


def content_words(text: str) -> list[str]:
    """The words of ``text`` without function words (all of them, if that leaves none)."""
    all_words = words(text)
    return [w for w in all_words if w not in _FUNCTION_WORDS] or all_words


def words(text: str) -> list[str]:
    """Casefolded word tokens, after Unicode normalisation."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.findall(r"\w+", text)


def evidence_score(quote: str, text: str) -> float:
    """Share of the quote's words found, in order, in one passage of ``text`` (case and punctuation ignored).

    The passage is anchored on the quote's longest exact run, so words scattered over the chunk don't count.
    """
    quoted, source = words(quote), words(text)
    if not quoted or not source:
        return 0.0
    anchor = difflib.SequenceMatcher(None, quoted, source, autojunk=False).find_longest_match()
    start = max(0, anchor.b - anchor.a)
    passage = source[start : start + len(quoted) + 3]
    blocks = difflib.SequenceMatcher(None, quoted, passage, autojunk=False).get_matching_blocks()
    return sum(block.size for block in blocks) / len(quoted)


def answers_agree(a: str, b: str) -> bool:
    """The same answer, worded a little differently: content-word F1 of at least ``AGREEMENT_F1``."""
    return _f1(content_words(a), content_words(b)) >= AGREEMENT_F1


def token_f1(a: str, b: str) -> float:
    """SQuAD-style token F1 between two answers."""
    return _f1(words(a), words(b))


def _f1(left: list[str], right: list[str]) -> float:
    if not left or not right:
        return 0.0  # two answers without a word do not agree: they say nothing
    common = sum(min(left.count(w), right.count(w)) for w in set(left))
    if common == 0:
        return 0.0
    precision, recall = common / len(left), common / len(right)
    return 2 * precision * recall / (precision + recall)
