"""The semantic cache's similarity score: may a request be answered with the cached answer of another?

    normalize(text)            the text the exact cache compares: NFKC, casefolded, whitespace and end punctuation
    veto(q1, q2)               why two texts must not share an answer however close their meaning ("numbers", …)
    SimilarityScorer           score(q1, q2) in [0, 1]; score_pairs(pairs) batched; encode + combine for the cache
    score(q1, q2)              the same, with one shared scorer (the model loads once per process)
    DEFAULT_THRESHOLD          a pair scoring at least this is a hit

The score is the cosine similarity of the two texts' embeddings (:mod:`tokenops.optimize.embed`), clipped to
[0, 1], with two overrides:

* texts equal after :func:`normalize` score 1.0 (no model needed);
* a pair that :func:`veto` refuses scores at most ``VETO_CAP`` (0.5), far below any sensible threshold.
  Embeddings are weakest at exactly the small differences that change an answer, so these are rules, not
  fitted weights: the numbers differ ("lose 5 kg" / "lose 50 kg", "in 2016" / "in 2017"), one text is negated
  and the other not ("is it safe" / "is it not safe"), a word is replaced by its opposite ("best" / "worst"),
  a name is replaced by another ("NRA in Idaho" / "NRA in Maine"), or the same names come in another order
  ("move from Canada to India" / "from India to Canada"). A text longer than the model's window (256 tokens),
  whose tail the model never saw, is vetoed too: it can only be a hit by being equal.

``DEFAULT_THRESHOLD`` is the one fitted number. ``bench/train_similarity.py`` chose it on the train part of the
shared QQP pairs (the lowest threshold on a 0.01 grid at and above which precision stays at least 0.92), and
``bench/cache_eval.py`` reports it on the held-out part (docs/benchmarks.md). Quora's labels cap precision near
0.93 at any useful hit rate, whatever the model: pairs that differ by a space, a plural or "you're" / "you are"
are often labelled "not duplicate", so precision on QQP understates how often a cache answers rightly.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tokenops.optimize.embed import Embedder, MiniLMEmbedder

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

DEFAULT_THRESHOLD = 0.97
VETO_CAP = 0.5  # the most a vetoed pair scores

Veto = Literal["numbers", "negation", "opposite", "names", "name order"]

_SPACE_BEFORE_PUNCT = re.compile(r"\s+([?.!,;:])")
_END_PUNCT = re.compile(r"[\s?.!]+$")


def normalize(text: str) -> str:
    """The form two requests are compared in by the exact cache: Unicode NFKC, casefolded, runs of whitespace
    made one space, no space before punctuation, and no trailing ``?``, ``.`` or ``!``.

    >>> normalize("  How do I  reset my password ?? ")
    'how do i reset my password'
    """
    t = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    t = _SPACE_BEFORE_PUNCT.sub(r"\1", t)
    return _END_PUNCT.sub("", t)


# -- the vetoes -------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
# "one" is left out: it is a pronoun as often as a number ("which one is better").
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()) if w != "_"}  # fmt: skip
_NUMBER_WORDS |= {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
                  "ninety": "90", "hundred": "e2", "hundreds": "e2", "thousand": "e3", "thousands": "e3",
                  "million": "e6", "millions": "e6", "billion": "e9", "billions": "e9", "trillion": "e12",
                  "lakh": "e5", "lakhs": "e5", "crore": "e7", "crores": "e7", "dozen": "12", "half": "1/2",
                  "quarter": "1/4", "twice": "x2", "double": "x2", "triple": "x3"}  # fmt: skip
_NEGATIONS = frozenset("not no never nor none nobody nothing neither cannot without".split())
_NOT_NAMES = frozenset("i i'm i've i'd i'll what why how when where who which whom whose is are am was were do does did "
                       "can could should would will shall may might must have has had if please".split())  # fmt: skip
# A word in one text whose opposite is in the other (and not in the first): "best" / "worst", "buy" / "sell".
_OPPOSITES = (
    "best worst, better worse, good bad, more less, most least, increase decrease, minimize maximize, minimum maximum, "
    "min max, highest lowest, higher lower, high low, cheapest priciest, cheap expensive, fastest slowest, faster "
    "slower, fast slow, easiest hardest, easy hard, largest smallest, biggest smallest, big small, large small, "
    "strong weak, rich poor, buy sell, buying selling, import export, advantages disadvantages, advantage "
    "disadvantage, pros cons, before after, start stop, win lose, gain lose, positive negative, true false, right "
    "wrong, love hate, legal illegal, male female, men women, man woman, boys girls, boy girl, guys girls, oldest "
    "newest, old new, first last, upload download, input output, send receive, enable disable, add remove, encrypt "
    "decrypt, encode decode, north south, east west, above below, early late, earliest latest, safe unsafe, possible "
    "impossible, like dislike, agree disagree, always never"
)


def _opposite_map(pairs: str) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for a, b in (pair.split() for pair in pairs.split(", ")):
        out[a] = out.get(a, frozenset()) | {b}
        out[b] = out.get(b, frozenset()) | {a}
    return out


_OPPOSITE = _opposite_map(_OPPOSITES)
_SENTENCE = re.compile(r"(?<=[.?!:;])\s+|\n+")


def _numbers(words: list[str], text: str) -> list[str]:
    digits = [n.replace(",", "") for n in _NUMBER.findall(text)]
    return sorted(digits + [_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS])


def _negated(words: list[str], text: str) -> bool:
    if any(w in _NEGATIONS and w != "no" for w in words) or any(w.endswith(("n't", "n’t")) for w in words):
        return True
    return re.search(r"\bno\b(?!\s*\.?\s*\d)", text) is not None  # "no" but not "train no. 19708"


def _names(text: str) -> list[str]:
    """Capitalized words not at the start of a sentence (a cheap stand-in for named entities), lowercased."""
    out = []
    for sentence in _SENTENCE.split(text):
        for i, w in enumerate(_WORD.findall(sentence)):
            if i > 0 and w[0].isupper() and w.lower() not in _NOT_NAMES:
                out.append(w.lower().removesuffix("'s").removesuffix("’s"))
    return out


def veto(q1: str, q2: str) -> Veto | None:
    """Why the cached answer of ``q1`` must not be served for ``q2`` however similar their meaning, or None.

    >>> veto("How do I lose 5 kg?", "How do I lose 50 kg?")
    'numbers'
    >>> veto("Is it safe to fly?", "Is it not safe to fly?")
    'negation'
    >>> veto("What is the best laptop?", "What is the worst laptop?")
    'opposite'
    >>> veto("Which is better, Apple or Samsung?", "Which is better, Samsung or Apple?")
    'name order'
    >>> veto("How do I reset my password?", "I forgot my password, how do I reset it?") is None
    True
    """
    a, b = unicodedata.normalize("NFKC", q1), unicodedata.normalize("NFKC", q2)
    wa, wb = _WORD.findall(a.casefold()), _WORD.findall(b.casefold())
    if _numbers(wa, a.casefold()) != _numbers(wb, b.casefold()):
        return "numbers"
    if _negated(wa, a.casefold()) != _negated(wb, b.casefold()):
        return "negation"
    sa, sb = set(wa), set(wb)
    if any(_OPPOSITE.get(w, frozenset()) & (sb - sa) for w in sa - sb):
        return "opposite"
    na, nb = _names(a), _names(b)
    if na or nb:
        only_a = [n for n in na if not set(_WORD.findall(n)) <= sb]
        only_b = [n for n in nb if not set(_WORD.findall(n)) <= sa]
        if only_a and only_b:  # a name replaced by another; a name only added or dropped is left to the model
            return "names"
        shared_b = set(nb)
        order_a = [n for n in dict.fromkeys(na) if n in shared_b]
        order_b = [n for n in dict.fromkeys(nb) if n in set(na)]
        if len(order_a) >= 2 and order_a != order_b:
            return "name order"
    return None


# -- the scorer -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """Texts as the cache stores them: unit vectors (one row each) and whether each text fit the model's window
    (a text that did not is matched only exactly)."""

    vectors: NDArray[np.float32]
    fits: list[bool]


class SimilarityScorer:
    """Scores pairs of requests; share one per process (it holds the model, and is thread-safe).

    >>> scorer = SimilarityScorer()
    >>> scorer.score("How do I lose 5 kg?", "How do I lose 50 kg?") < DEFAULT_THRESHOLD
    True

    The cache uses it in two steps: :meth:`encode` a request (and store the vector with its text), find the
    stored vectors nearest to it by dot product, then :meth:`combine` each candidate's cosine with both texts.
    """

    def __init__(self, embedder: Embedder | None = None, *, threshold: float = DEFAULT_THRESHOLD):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        self.embedder: Embedder = embedder if embedder is not None else MiniLMEmbedder()
        self.threshold = threshold

    def encode(self, texts: Sequence[str]) -> Encoded:
        limit = self.embedder.max_tokens
        return Encoded(self.embedder.embed(texts), [n <= limit for n in self.embedder.token_counts(texts)])

    def combine(self, cosine: float, q1: str, q2: str, *, fits: bool = True) -> float:
        """The score of a pair whose embeddings' cosine is ``cosine``; ``fits``: both texts fit the window."""
        if normalize(q1) == normalize(q2):
            return 1.0
        s = min(max(float(cosine), 0.0), 1.0)
        if not fits or veto(q1, q2) is not None:
            return min(s, VETO_CAP)
        return s

    def hit(self, q1: str, q2: str) -> bool:
        return self.score(q1, q2) >= self.threshold

    def score(self, q1: str, q2: str) -> float:
        """How safely ``q2`` can be answered with the cached answer of ``q1``, in [0, 1]."""
        return self.score_pairs([(q1, q2)])[0]

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Scores many pairs at once: each distinct text is embedded once, in batches."""
        same = [normalize(q1) == normalize(q2) for q1, q2 in pairs]
        texts = _distinct(t for pair, eq in zip(pairs, same, strict=True) if not eq for t in pair)
        where = {t: i for i, t in enumerate(texts)}
        encoded = self.encode(texts) if texts else Encoded(_empty(), [])
        out = []
        for (q1, q2), eq in zip(pairs, same, strict=True):
            if eq:  # never embedded: equal texts are a hit whatever the model says
                out.append(1.0)
                continue
            i, j = where[q1], where[q2]
            cosine = float(encoded.vectors[i] @ encoded.vectors[j])
            out.append(self.combine(cosine, q1, q2, fits=encoded.fits[i] and encoded.fits[j]))
        return out


def _empty() -> NDArray[np.float32]:
    import numpy as np

    return np.zeros((0, 0), dtype=np.float32)


def _distinct(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))


@functools.lru_cache(maxsize=1)
def default_scorer() -> SimilarityScorer:
    """The process's shared scorer (the model loads on its first use, once)."""
    return SimilarityScorer()


def score(q1: str, q2: str) -> float:
    """:meth:`SimilarityScorer.score` with the shared scorer: 1.0 for equal texts, at most ``VETO_CAP`` for a
    vetoed pair, else the cosine similarity of their embeddings."""
    return default_scorer().score(q1, q2)
