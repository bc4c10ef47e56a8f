"""Near-duplicate questions: content-word keys and a bounded, streaming duplicate detector.

Synthetic QA from small models repeats itself ("What is X?", "what is x ?", "What's X?"); ``NearDuplicates``
groups such questions in one pass with bounded work per question, so 100,000 pairs dedupe in seconds.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
import zlib
from array import array
from collections.abc import Iterable

__all__ = ["NearDuplicates", "question_key", "question_words"]


# Near-duplicate questions. Two questions are duplicates when their keys (their content words: case, punctuation,
# contractions, inflection, word order and function words ignored) are equal, or when one key holds the other
# and the smaller has at least 4/5 of the larger's words (Jaccard >= 4/5 with containment). Why: keys hold 3..10
# words; at 4/5 a question with one qualifier more ("the three stations" / "the stations", 4 of 5) is a
# duplicate, while a swapped content word never is, however long the question ("capital of France" / "capital
# of Spain", "upstream" / "downstream" stations): a swapped word is what makes two questions ask different
# things, and plain Jaccard >= 4/5 would merge those from 9 words on. Question words and negations count as
# content: "Who founded X?" and "When was X founded?" differ. Paraphrases with other words ("Which city is the
# capital" / "What is the capital") are kept: telling those apart would take embeddings.
_SIMILAR = (4, 5)  # Jaccard >= 4/5, as integers so that prefix lengths are exact
_BUCKET_CAP = 32

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_IS_CONTRACTED = _words("what who where when why how which that it there here")
_NOT_CONTRACTED = {"can": "can", "won": "will", "shan": "shall", "ain": "is"}
_CONTRACTED = {"re": "are", "ve": "have", "ll": "will", "d": "would", "m": "am"}
_QUESTION_WORDS = _words("what who whom whose where when why how which not no never nor")
_FUNCTION_WORDS = _words(
    "a an the is are was were be been being am do does did done has have had having can could will would shall "
    "should may might must of in on at to for by with from about into onto over under as than then and or but "
    "if so it its this that these those there here they them their he him his she her we us our you your i me "
    "my one ones some any such please also exactly according given called named"
)


def question_words(question: str) -> list[str]:
    """The question's words: NFKC, case-folded, contractions expanded ("what's" -> what is, "isn't" -> is not)."""
    text = unicodedata.normalize("NFKC", question).casefold().translate(_APOSTROPHES)
    words: list[str] = []
    for word in _WORD.findall(text):
        head, _, tail = word.partition("'")
        if not tail:
            words.append(head)
        elif tail == "t" and head.endswith("n"):
            words += [_NOT_CONTRACTED.get(head, head[:-1]), "not"]
        elif tail == "s":  # "what's" is "what is"; any other "'s" is a possessive
            words += [head, "is"] if head in _IS_CONTRACTED else [head]
        else:
            words += [head, _CONTRACTED.get(tail, tail)]
    return words


@functools.lru_cache(maxsize=8192)  # words repeat (Zipf): a small cache takes most of them
def _stem(word: str) -> str:
    """A light suffix stripper (not Porter): "cause", "causes", "caused", "causing" -> caus; "study", "studies"
    -> studi. It merges an unrelated pair now and then, which costs little: a key is a set of several words."""
    if word in _QUESTION_WORDS or not word.isalpha():
        return word
    for suffix in ("ing", "ed", "es", "s", "e"):
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3 and not (suffix == "s" and stem.endswith(("s", "u", "i"))):
            word = stem
            break
    return word[:-1] + "i" if word.endswith("y") else word


def question_key(question: str) -> tuple[str, ...]:
    """The near-duplicate key: the question's content words (function words dropped, stemmed), sorted, once each."""
    return tuple(sorted({_stem(w) for w in question_words(question) if w not in _FUNCTION_WORDS}))


@functools.lru_cache(maxsize=8192)
def _token_order(token: str) -> tuple[bool, int, str]:
    # One global order for prefix filtering. Question words go last: in most questions, they would make huge
    # buckets; crc32 (stable across processes, unlike hash()) spreads the rest.
    return token in _QUESTION_WORDS, zlib.crc32(token.encode()), token


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class NearDuplicates:
    """Groups near-duplicate questions in one streaming pass, with bounded work per question.

    ``add`` each question in export order with its rank; ``dropped()`` then gives the positions of all but the
    best of each group (highest rank, then earliest). Equal keys meet in a hash table. Similar keys meet through
    prefix filtering: with words in one global order, two sets with Jaccard >= t share a word among their first
    ``n - ceil(t n) + 1`` (Chaudhuri et al. 2006), so a question is compared only with questions that share one
    of its first 1..3 words, and only with the latest ``bucket_cap`` of those: O(1) per question. A 64-bit word
    signature and the key size reject most of those without decoding a key. Groups are the connected
    components of the duplicate pairs (union-find).

    What grows, per question: its key (~40 bytes), a rank, a signature, a size, three ints and a slot of the
    exact-key table: about 130 bytes, 13 MB per 100,000 questions. Buckets are bounded: distinct words x
    ``bucket_cap``. The records themselves are not held: ``export`` spools them to a temporary file.
    """

    def __init__(self, bucket_cap: int = _BUCKET_CAP) -> None:
        self.bucket_cap = bucket_cap
        self._exact = _FirstPositions()
        self._buckets: dict[str, array[int]] = {}
        self._keys = bytearray()
        self._key_ends = array("Q")
        self._signatures = array("Q")
        self._sizes = array("H")
        self._ranks = array("d")
        self._parent = array("i")  # positions: int32 is 2**31 questions, and half the memory of int64
        self._best = array("i")

    def __len__(self) -> int:
        return len(self._ranks)

    def add(self, question: str, rank: float) -> int:
        """Take the next question; ``rank`` orders a group's members (higher is better). Returns its position."""
        pos = len(self._ranks)
        self._ranks.append(rank)
        self._parent.append(pos)
        self._best.append(pos)
        key = question_key(question)
        exact = _hash64("\0".join(key) if key else "\1" + " ".join(question_words(question)))
        first = self._exact.setdefault(exact, pos)
        # An equal key joins its group at once and stays out of the buckets, which need only one of them.
        ordered = sorted(key, key=_token_order) if key and first == pos else []
        self._keys += " ".join(ordered).encode()
        self._key_ends.append(len(self._keys))
        signature = _signature(ordered)
        self._signatures.append(signature)
        self._sizes.append(min(len(ordered), 0xFFFF))
        if first != pos:
            self._union(first, pos)
        elif ordered:
            self._probe(pos, ordered, signature)
        return pos

    def dropped(self) -> set[int]:
        """Positions of every question that is not the best of its group."""
        return {i for i in range(len(self._ranks)) if self._best[self._find(i)] != i}

    def _probe(self, pos: int, ordered: list[str], signature: int) -> None:
        num, den = _SIMILAR
        size = len(ordered)
        prefix = size - (num * size + den - 1) // den + 1
        words: set[str] | None = None
        for token in ordered[:prefix]:
            bucket = self._buckets.setdefault(token, array("i"))
            for other in bucket:
                if not self._may_contain(signature, size, other) or self._find(other) == self._find(pos):
                    continue
                words = words or set(ordered)
                if self._similar(words, other):
                    self._union(other, pos)
            bucket.append(pos)
            if len(bucket) > self.bucket_cap:
                del bucket[0]

    def _may_contain(self, signature: int, size: int, other: int) -> bool:
        """Cheap necessary conditions: one signature covers the other, and the sizes are within 4/5."""
        theirs, their_size = self._signatures[other], self._sizes[other]
        small, large = (signature, theirs) if size <= their_size else (theirs, signature)
        num, den = _SIMILAR
        return small & ~large == 0 and den * min(size, their_size) >= num * max(size, their_size)

    def _similar(self, words: set[str], other: int) -> bool:
        start = self._key_ends[other - 1] if other else 0
        theirs = set(self._keys[start : self._key_ends[other]].decode().split())
        small, large = sorted((words, theirs), key=len)
        num, den = _SIMILAR
        return small <= large and den * len(small) >= num * len(large)

    def _find(self, pos: int) -> int:
        parent = self._parent
        while parent[pos] != pos:
            parent[pos] = parent[parent[pos]]  # path halving
            pos = parent[pos]
        return pos

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        root, child = min(ra, rb), max(ra, rb)
        self._parent[child] = root
        self._best[root] = self._better(self._best[ra], self._best[rb])

    def _better(self, a: int, b: int) -> int:
        ranks = self._ranks
        return a if (ranks[a], -a) > (ranks[b], -b) else b


class _FirstPositions:
    """64-bit hash -> first position, in two flat arrays (open addressing, load <= 2/3): 12..36 bytes an entry,
    where a dict of ints takes ~116."""

    def __init__(self) -> None:
        self._hashes = array("Q", bytes(8 * 1024))
        self._positions = array("i", [-1]) * 1024
        self._used = 0

    def setdefault(self, key: int, pos: int) -> int:
        """The position first stored under ``key``; stores ``pos`` if there is none."""
        mask = len(self._hashes) - 1
        slot = key & mask
        while (found := self._positions[slot]) != -1:
            if self._hashes[slot] == key:
                return found
            slot = (slot + 1) & mask
        self._hashes[slot], self._positions[slot] = key, pos
        self._used += 1
        if 3 * self._used > 2 * len(self._hashes):
            self._grow()
        return pos

    def _grow(self) -> None:
        hashes, positions = self._hashes, self._positions
        self._hashes = array("Q", bytes(16 * len(hashes)))
        self._positions = array("i", [-1]) * (2 * len(hashes))
        self._used = 0
        for key, pos in zip(hashes, positions, strict=True):
            if pos != -1:
                self.setdefault(key, pos)


def _signature(words: Iterable[str]) -> int:
    """One bit per word (of 64): if A is a subset of B, A's bits are a subset of B's."""
    bits = 0
    for word in words:
        bits |= 1 << (zlib.crc32(word.encode()) & 63)
    return bits
