"""Triples against reference triples, as the WebNLG 2020 text-to-RDF challenge scores them.

Written from the challenge's published definitions (its scorer is GPL-3 and is not copied here), so that
a score from ``kg-etl eval webnlg`` matches the official script's on the same candidates (within 0.01 F1;
``tests/test_eval.py`` holds cases worked out by hand). Per entry:

1. Triples are normalised: camelCase split, lower case, underscores to spaces, a trailing "(qualifier)"
   dropped from the object.
2. Each element (subject, predicate, object) of a candidate is linked to the same element of a reference,
   token n-grams longest first, and both become spans on one token grid, labelled by element.
3. The spans are counted as in SemEval-2013 named-entity evaluation: correct, incorrect, partial,
   missing, spurious, under four matchings. Strict: same span and label; Exact: same span; Partial:
   overlapping spans (half credit); Type: overlapping spans with the same label.
4. Candidates and references are padded to the same number and paired by the assignment with the best
   mean F1 (ties: the first in lexicographic order), so order within an entry does not matter.

System precision, recall and F1 are means over all pairs of all entries (a macro average, as the challenge
reports), and "triple" is whole-triple match: each distinct lower-cased triple a class, macro-averaged.

Where the official script has accidents (a swap of subject and object also discards the predicate's
comparison; it crashes on some repeated tokens), this scorer does the plain thing; on WebNLG-style
candidates the difference is a few thousandths of F1.
"""

from __future__ import annotations

import itertools
import re
import statistics
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

__all__ = ["MATCHINGS", "Counts", "Scores", "Triple", "normalise", "score_pair", "score_triples", "tokens"]

Triple = tuple[str, str, str]
MATCHINGS = ("strict", "exact", "partial", "type")
LABELS = ("SUB", "PRED", "OBJ")
# Pairings tried exhaustively up to this many triples an entry (8! = 40,320); beyond it, greedily.
EXHAUSTIVE = 8


class Scores(BaseModel):
    precision: float
    recall: float
    f1: float


@dataclass
class Counts:
    """SemEval-2013 counts for one matching type."""

    correct: int = 0
    incorrect: int = 0
    partial: int = 0
    missed: int = 0
    spurious: int = 0

    @property
    def possible(self) -> int:
        return self.correct + self.incorrect + self.partial + self.missed

    @property
    def actual(self) -> int:
        return self.correct + self.incorrect + self.partial + self.spurious

    def scores(self, half_credit: bool) -> tuple[float, float, float]:
        hits = self.correct + (0.5 * self.partial if half_credit else 0)
        precision = hits / self.actual if self.actual else 0.0
        recall = hits / self.possible if self.possible else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1


# -- normalisation and tokens --------------------------------------------------------------------------------


_CAMEL = re.compile(r"([a-z])([A-Z])")
_QUALIFIER = re.compile(r"^(.*?)(\s\((.*?)\))$")
# Words with inner hyphens, points, commas, colons or apostrophes stay whole ("1923-11-18", "8,849", "o'neil"),
# as the Treebank tokenizer keeps them; "'s" and "n't" are split off; a double quote becomes the token '' .
_TOKEN = re.compile(r"n't\b|'s\b|\w+(?:[-.,:'/]\w+)*|\"|\S")
_PUNCTUATION = frozenset(string.punctuation)


def normalise(triple: str) -> list[str]:
    """A ``s | p | o`` text as the three (or more) normalised pieces the challenge compares."""
    text = _CAMEL.sub(r"\1 \2", triple).lower().replace("_", " ")
    text = re.sub(r"\s+", " ", text)
    pieces = text.split(" | ")
    match = _QUALIFIER.match(pieces[-1])
    if match is not None:
        pieces[-1] = match.group(1)
    return pieces


def tokens(piece: str, *, reference: bool, strict: bool = False) -> list[str]:
    """The tokens of one element; references lose every all-punctuation token, candidates single marks only.

    ``strict`` (for swapped elements) drops every token with any punctuation in it, on both sides.
    """
    found = ["''" if t == '"' else t for t in _TOKEN.findall(piece.lower())]
    if strict:
        return [t for t in found if not any(ch in _PUNCTUATION for ch in t)]
    if reference:
        return [t for t in found if not all(ch in _PUNCTUATION for ch in t)]
    return [t for t in found if not (len(t) == 1 and t in _PUNCTUATION)]


# -- one element -> spans ------------------------------------------------------------------------------------


@dataclass
class _Element:
    reference: list[tuple[int, int, str]] = field(default_factory=list)
    candidate: list[tuple[int, int, str]] = field(default_factory=list)
    width: int = 0
    found: bool = False


def _link(ref: list[str], cand: list[str]) -> tuple[list[tuple[int, int] | None], list[int | None]]:
    """Candidate n-grams linked to unlinked reference n-grams, longest first, leftmost first.

    Returns, per candidate token, (match number, reference index) or None; per reference token, the match.
    """
    by_cand: list[tuple[int, int] | None] = [None] * len(cand)
    by_ref: list[int | None] = [None] * len(ref)
    match = 1
    for n in range(len(cand), 0, -1):
        while True:
            hit = None
            for j in range(len(cand) - n + 1):
                if any(by_cand[j + t] is not None for t in range(n)):
                    continue
                window = cand[j : j + n]
                i = next(
                    (
                        i
                        for i in range(len(ref) - n + 1)
                        if ref[i : i + n] == window and all(by_ref[i + t] is None for t in range(n))
                    ),
                    None,
                )
                if i is not None:
                    hit = (j, i)
                    break
            if hit is None:
                break
            j, i = hit
            for t in range(n):
                by_cand[j + t] = (match, i + t)
                by_ref[i + t] = match
            match += 1
    return by_cand, by_ref


def _element(ref: list[str], cand: list[str], base: int, ref_label: str, cand_label: str) -> _Element:
    """One element's reference span and candidate spans on a shared grid, from ``base``."""
    by_cand, by_ref = _link(ref, cand)
    linked = [j for j, link in enumerate(by_cand) if link is not None]
    if not linked:
        return _unlinked(ref, cand, base, ref_label, cand_label)
    first, last = linked[0], linked[-1]
    first_link, last_link = by_cand[first], by_cand[last]
    assert first_link is not None and last_link is not None
    before_on = first_link[1] == 0
    after_on = by_ref[-1] is not None and by_cand[-1] is None and last_link[1] == len(ref) - 1
    before: list[object] = []
    after: list[object] = []
    loose: list[object] = []
    for j, link in enumerate(by_cand):
        if link is not None:
            continue
        if j < first and before_on:
            before.append(("match", first_link[0]))
        elif after_on and j > last:
            after.append(("match", last_link[0]))
        else:
            loose.append(("loose", 1 + sum(1 for k in linked if k < j)))
    plain = None
    grid = [*before, *(("match", m) if m is not None else plain for m in by_ref), *after, *loose]
    start = base + len(before)
    spans = []
    current: object = None
    begin, started = 0, False
    for x, cell in enumerate(grid):
        if cell is plain:
            if started:
                spans.append((base + begin, base + x - 1, cand_label))
            continue
        started = True
        if cell != current:
            if current is not None:
                spans.append((base + begin, base + x - 1, cand_label))
            current, begin = cell, x
        if x == len(grid) - 1:
            spans.append((base + begin, base + x, cand_label))
    return _Element([(start, start + len(ref) - 1, ref_label)], spans, len(grid), True)


def _unlinked(ref: list[str], cand: list[str], base: int, ref_label: str, cand_label: str) -> _Element:
    if not ref:
        return _Element([], [(base, base + len(cand) - 1, cand_label)], len(cand))
    if not cand:
        # The challenge's scorer advances by one position here, whatever the reference's length.
        return _Element([(base, base + len(ref) - 1, ref_label)], [], 1)
    end = base + len(ref)
    return _Element([(base, end - 1, ref_label)], [(end, end + len(cand) - 1, cand_label)], len(ref) + len(cand))


# -- one pair of triples -------------------------------------------------------------------------------------


def _elements(ref_pieces: list[str], cand_pieces: list[str]) -> list[_Element]:
    """Subject, predicate and object compared in place, then, where two were not found, swapped."""
    ref = [tokens(p, reference=True) for p in ref_pieces]
    cand = [tokens(p, reference=False) for p in cand_pieces]
    elements, base = [], 0
    for i, label in enumerate(LABELS):
        element = _element(ref[i], cand[i], base, label, label)
        elements.append(element)
        base += element.width
    return _swapped(elements, ref_pieces, cand_pieces)


def _swapped(elements: list[_Element], ref_pieces: list[str], cand_pieces: list[str]) -> list[_Element]:
    """A candidate with two elements in each other's places: subject/object, subject/predicate, predicate/object.

    Tried in that order where both elements were not found in place; the first swap that finds either is kept.
    """
    ref = [tokens(p, reference=True, strict=True) for p in ref_pieces]
    cand = [tokens(p, reference=False, strict=True) for p in cand_pieces]
    for a, b in ((0, 2), (0, 1), (1, 2)):
        if elements[a].found or elements[b].found:
            continue
        base = sum(e.width for e in elements[:a])
        first = _element(ref[a], cand[b], base, LABELS[a], LABELS[b])
        between = sum(e.width for e in elements[a + 1 : b])
        second = _element(ref[b], cand[a], base + first.width + between, LABELS[b], LABELS[a])
        if first.found or second.found:
            swapped = list(elements)
            swapped[a], swapped[b] = first, second
            return swapped
    return elements


def _overlap(a: tuple[int, int, str], b: tuple[int, int, str]) -> bool:
    # Ends are exclusive in the challenge's counting: a one-token span overlaps nothing.
    return max(a[0], b[0]) < min(a[1], b[1])


def _count(elements: list[_Element]) -> dict[str, Counts]:
    """SemEval-2013 counts of one triple pair, under each matching type."""
    truth = [span for e in elements for span in e.reference]
    predicted = [span for e in elements for span in e.candidate]
    counts = {name: Counts() for name in MATCHINGS}
    covered = [False] * len(truth)
    for span in predicted:
        if span in truth:
            covered[truth.index(span)] = True
            for c in counts.values():
                c.correct += 1
            continue
        outcome = None
        for i, true in enumerate(truth):
            if (span[0], span[1]) == (true[0], true[1]):
                outcome = {"strict": "incorrect", "type": "incorrect", "partial": "correct", "exact": "correct"}
            elif _overlap(span, true) and span[2] == true[2]:
                outcome = {"strict": "incorrect", "type": "correct", "partial": "partial", "exact": "incorrect"}
            elif _overlap(span, true):
                outcome = {"strict": "incorrect", "type": "incorrect", "partial": "partial", "exact": "incorrect"}
            if outcome is not None:
                covered[i] = True
                break
        for name, c in counts.items():
            kind = outcome[name] if outcome is not None else "spurious"
            setattr(c, kind, getattr(c, kind) + 1)
    for c in counts.values():
        c.missed += covered.count(False)
    return counts


def score_pair(reference: str, candidate: str) -> dict[str, Counts]:
    """The counts of one candidate triple against one reference triple ("" for none on either side)."""
    ref_pieces, cand_pieces = normalise(reference), normalise(candidate)
    if len(ref_pieces) < 2:
        ref_pieces = ["", "", ""]
    if len(cand_pieces) < 3:
        cand_pieces = ["", "", ""]
    if len(ref_pieces) < 3:
        ref_pieces = [*ref_pieces, ""]
    return _count(_elements(ref_pieces[:3], cand_pieces[:3]))


def _pair_scores(counts: dict[str, Counts]) -> dict[str, tuple[float, float, float]]:
    return {name: c.scores(half_credit=name in ("partial", "type")) for name, c in counts.items()}


# -- entries and the system ----------------------------------------------------------------------------------


def _entry_pairs(references: Sequence[str], candidates: Sequence[str]) -> list[dict[str, tuple[float, float, float]]]:
    """The scores of an entry's pairs, under the pairing with the best mean F1."""
    n = max(len(references), len(candidates))
    refs = [*references, *[""] * (n - len(references))]
    cands = [*candidates, *[""] * (n - len(candidates))]
    table = [[_pair_scores(score_pair(r, c)) for r in refs] for c in cands]
    merit = [[statistics.mean(s[name][2] for name in MATCHINGS) for s in row] for row in table]
    if n <= EXHAUSTIVE:
        best, best_score = tuple(range(n)), -1.0
        for order in itertools.permutations(range(n)):
            score = sum(merit[i][order[i]] for i in range(n))
            if score > best_score:
                best, best_score = order, score
    else:  # greedy: the best remaining pair first
        best_list = [-1] * n
        free = set(range(n))
        for i, j in sorted(itertools.product(range(n), range(n)), key=lambda ij: -merit[ij[0]][ij[1]]):
            if best_list[i] < 0 and j in free:
                best_list[i] = j
                free.discard(j)
        best = tuple(best_list)
    return [table[i][best[i]] for i in range(n)]


def _triple_text(triple: Triple) -> str:
    return " | ".join(triple)


def score_triples(references: Sequence[Sequence[Triple]], candidates: Sequence[Sequence[Triple]]) -> dict[str, Scores]:
    """System scores of candidate triples against references, entry by entry (the lists are aligned).

    Keys: the four matching types, and "triple" (whole-triple match).
    """
    pairs = [
        pair
        for refs, cands in zip(references, candidates, strict=True)
        for pair in _entry_pairs([_triple_text(t) for t in refs], [_triple_text(t) for t in cands])
    ]
    result = {}
    for name in MATCHINGS:
        if not pairs:
            result[name] = Scores(precision=0.0, recall=0.0, f1=0.0)
            continue
        p, r, f = (statistics.mean(pair[name][k] for pair in pairs) for k in range(3))
        result[name] = Scores(precision=round(p, 4), recall=round(r, 4), f1=round(f, 4))
    result["triple"] = _whole_triples(references, candidates)
    return result


def _whole_triples(references: Sequence[Sequence[Triple]], candidates: Sequence[Sequence[Triple]]) -> Scores:
    """Whole-triple match: every distinct lower-cased triple a class; precision, recall, F1 macro over classes."""
    refs = [{_triple_text(t).lower() for t in entry} for entry in references]
    cands = [{_triple_text(t).lower() for t in entry} for entry in candidates]
    classes = set().union(*refs, *cands)
    if not classes:
        return Scores(precision=0.0, recall=0.0, f1=0.0)
    ps, rs, fs = [], [], []
    for triple in sorted(classes):
        both = sum(triple in r and triple in c for r, c in zip(refs, cands, strict=True))
        predicted = sum(triple in c for c in cands)
        true = sum(triple in r for r in refs)
        p = both / predicted if predicted else 0.0
        r = both / true if true else 0.0
        ps.append(p)
        rs.append(r)
        fs.append(2 * p * r / (p + r) if p + r else 0.0)
    return Scores(
        precision=round(statistics.mean(ps), 4), recall=round(statistics.mean(rs), 4), f1=round(statistics.mean(fs), 4)
    )
