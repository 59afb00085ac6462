"""The difficulty router: from a prompt alone, how likely the strong model is needed.

A call to a routing alias goes to a strong (expensive) or a weak (cheap) model. The router scores the prompt
with :meth:`Router.p_strong`, the estimated probability that the strong model's answer beats the weak one's (a tie
counts half: RouteLLM's "strong win rate"), and :meth:`Router.choose` sends it to the strong model when that
reaches a threshold. A threshold is chosen for a share of strong calls on real traffic
(:func:`tokenops.optimize.evaluate_router.threshold_for_share`), not read as an absolute probability.

Two routers share that interface:

* :class:`DifficultyRouter`, the learned one: a logistic model over *hand features* (length, digits and math or
  logic symbols, code markers, question structure, enumerated parts, negations, conditionals, reasoning verbs, …)
  and *hashed word n-grams* (unigrams and bigrams of words and punctuation, CRC-32 into 2^bits buckets): the rule
  weights as a prior, plus a correction learned from labelled prompts, applied to prompts of the format it was
  learned on (multiple-choice questions for the shipped file: MMLU). Its weights are data: a small gzip JSON file
  trained offline by ``bench/train_router.py``; the packaged one is ``data/router-v1.json.gz``. Inference is pure
  Python (no numpy): a few regex passes and dict look-ups.
* :class:`RuleRouter`, the fallback when no weights file is configured or shipped: the same hand features with
  fixed, hand-set weights.

>>> router = RuleRouter()
>>> router.p_strong("hi") < router.p_strong("Prove that there are infinitely many primes p with p % 4 == 3.")
True

Only the first :data:`WINDOW` characters and the last :data:`TAIL` of a longer prompt are read for the features
(its full length still counts), so a call costs the same for a 10 KB and a 10 MB prompt.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import repeat
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from tokenops.errors import ConfigError

__all__ = ["DEFAULT_FILE", "FORMAT", "HAND_FEATURES", "VERSION", "DifficultyRouter", "Router", "RuleRouter",
           "default_router", "gram_buckets", "hand_features", "load_router", "named_buckets", "ngrams", "prompt_text"]  # fmt: skip

FORMAT = "tokenops-router"
VERSION = 1  # of the file format and of the features below: a change to either is a new version
DEFAULT_FILE = "router-v1.json.gz"
WINDOW = 4000  # characters read from the start of a prompt ...
TAIL = 1000  # ... and from its end (where the question often is)

_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")  # on lowercased text: ASCII words, digit runs, any other character
_LATEX = re.compile(r"\\[a-zA-Z]+|\$")
# a line that starts an enumerated part: "I.", "ii)", "1.", "(a)", "- ", "* "
_ENUM = re.compile(r"^[ \t]*(?:(?:[ivx]+|\d{1,2}|[a-z])[.)]|\([a-z0-9]{1,3}\)|[-*•])[ \t]", re.M)
_OPTION = re.compile(r"^[ \t]*\(?[a-d][.)][ \t]", re.M)  # multiple-choice options "A. …" (on lowercased text)
_UPPER = re.compile(r"[^A-Z]+")
_CODE = ("```", "def ", "return ", "import ", "class ", "function", "{", "}", ";\n", "==", "!=", "=>", "->", "()",
         "#include", "print(", "self.", "</")  # fmt: skip
_PARTS = ("statement 1", "statement 2", "scenario 1", "scenario 2", "step 1", "part 1", "case 1")
_DIGITS = "0123456789"

_MATH_CHARS = frozenset("=+*/^<>≤≥≠±×÷√∑∏∫πθ∞∂∆∇%≈")
_LOGIC_CHARS = frozenset("∨∧¬⊃→↔∀∃•≡⊢⊨⇒⇔~∴∈∉⊂⊆∪∩")
_NEGATIONS = frozenset("not except least false incorrect never none cannot neither nor untrue".split())
_CONDITIONALS = frozenset("if unless suppose supposing assume assuming given whether would then hence therefore "
                          "implies".split())  # fmt: skip
_REASONING = frozenset("prove proof derive justify explain why calculate compute solve determine estimate evaluate "
                       "find simplify optimize analyze analyse compare design implement debug".split())  # fmt: skip
_OPEN_TASKS = frozenset("write compose draft essay story poem letter email summarize summarise rewrite translate "
                        "describe list brainstorm".split())  # fmt: skip
_CONSTRAINTS = frozenset("exactly must only each every least most maximum minimum without within".split())
_QUANTITY = ("how many", "how much", "what is the value", "probability", "percent", "expected value", "how long")
_VARIABLES = frozenset("bcdefghjklmnopqrstuvwxyz")  # a lone ASCII letter but "a" and "i" (words): a variable

HAND_FEATURES: tuple[str, ...] = (
    "log_chars", "log_words", "mean_word_len", "long_word_share", "type_token_ratio", "digit_share",
    "log_numbers", "log_big_numbers", "log_math", "log_latex", "log_logic", "log_variables", "log_code",
    "code_block", "log_questions", "log_sentences", "log_lines", "log_enumerated", "mc_options", "log_negations",
    "log_conditionals", "log_reasoning", "log_quantity", "log_open_tasks", "log_constraints", "upper_share",
    "log_quotes",
)  # fmt: skip


# word -> which lexicon count it adds to (negations, conditionals, reasoning verbs, open tasks, constraints)
_LEXICON = {w: i for i, lex in enumerate((_NEGATIONS, _CONDITIONALS, _REASONING, _OPEN_TASKS, _CONSTRAINTS))
            for w in lex}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Parsed:
    chars: int  # the whole prompt's length
    text: str  # the window read
    low: str
    tokens: list[str]
    counts: dict[str, int]  # token -> occurrences


def _parse(prompt: str) -> _Parsed:
    text = prompt if len(prompt) <= WINDOW + TAIL else prompt[:WINDOW] + "\n" + prompt[-TAIL:]
    low = text.lower()
    tokens = _TOKEN.findall(low)
    return _Parsed(len(prompt), text, low, tokens, Counter(tokens))


def hand_features(prompt: str) -> list[float]:
    """The hand features of a prompt, in the order of :data:`HAND_FEATURES` (raw values, not standardized)."""
    return _hand(_parse(prompt))


def _hand(p: _Parsed) -> list[float]:
    text, low = p.text, p.low
    options = len(_OPTION.findall(low))
    # one pass over the distinct tokens
    nw = distinct = letters_total = long_words = numbers = digits = big = maths = logic = letters = 0
    lex = [0, 0, 0, 0, 0]
    for t, c in p.counts.items():
        first = t[0]
        if first in _DIGITS:
            numbers += c
            digits += len(t) * c
            if len(t) >= 3:
                big += c
        elif t.isalpha():
            nw += c
            distinct += 1
            size = len(t)
            letters_total += size * c
            if size >= 9:
                long_words += c
            if size == 1:
                if t in _VARIABLES:
                    letters += c
            else:
                i = _LEXICON.get(t)
                if i is not None:
                    lex[i] += c
        elif t in _MATH_CHARS:
            maths += c
        elif t in _LOGIC_CHARS:
            logic += c
    m = len(text) or 1
    log = math.log1p
    return [
        log(p.chars),
        log(nw),
        letters_total / nw if nw else 0.0,
        long_words / nw if nw else 0.0,
        distinct / nw if nw else 0.0,
        digits / m,
        log(numbers),
        log(big),
        log(maths),
        log(len(_LATEX.findall(text))),
        log(logic),
        log(max(0, letters - max(0, options - 1))),  # options B-D are lone letters too
        log(sum(map(text.count, _CODE))),
        1.0 if "```" in text or "\n    " in text or "\n\t" in text else 0.0,
        log(text.count("?")),
        log(low.count(". ") + low.count("? ") + low.count("! ") + 1),
        log(text.count("\n")),
        log(max(0, len(_ENUM.findall(low)) - options) + sum(map(low.count, _PARTS))),  # not the options A-D
        1.0 if options >= 2 else 0.0,
        log(lex[0]),
        log(lex[1]),
        log(lex[2]),
        log(sum(map(low.count, _QUANTITY))),
        log(lex[3]),
        log(lex[4]),
        len(_UPPER.sub("", text)) / m,
        log(text.count('"') + text.count("“") + text.count("”")),
    ]


_MIX = 0x9E3779B1  # combines two unigram hashes into a bigram's (Fibonacci hashing constant)


def ngrams(prompt: str) -> list[str | None]:
    """The tokens n-gram features are made of: lowercased words and punctuation marks; ``None`` for a number or a
    math or logic symbol, which no n-gram contains (numbers and math are hand features whose weights may only raise
    the score; as n-grams they would learn MMLU's quirk that computation questions gain nothing from the strong
    model). The features are the unigrams and bigrams of this list that contain no ``None``."""
    return [t if _gram_token(t) else None for t in _parse(prompt).tokens]


_NOT_GRAMS = frozenset("$\\")  # LaTeX's math delimiters: math too


def _gram_token(t: str) -> bool:
    return not (t[0] in _DIGITS or t in _MATH_CHARS or t in _LOGIC_CHARS or t in _NOT_GRAMS)


def gram_buckets(prompt: str, bits: int) -> set[int]:
    """The hash buckets of the prompt's unigrams and bigrams (see :func:`_buckets`)."""
    p = _parse(prompt)
    return _buckets(p.tokens, p.counts, bits)


def named_buckets(prompt: str, bits: int) -> dict[int, str]:
    """Each hash bucket of the prompt with an n-gram that falls in it (to show what a weight stands for)."""
    tokens = ngrams(prompt)
    mask = (1 << bits) - 1
    crc = {t: zlib.crc32(t.encode()) for t in set(tokens) if t is not None}
    out = {h & mask: t for t, h in crc.items()}
    for a, b in zip(tokens, tokens[1:], strict=False):
        if a is not None and b is not None:
            out.setdefault((((crc[a] * _MIX) ^ crc[b]) >> 7) & mask, f"{a} {b}")
    return out


def _buckets(tokens: list[str], counts: dict[str, int], bits: int) -> set[int]:
    """Unigram bucket: CRC-32 of the token's UTF-8 bytes (stable across runs and machines, unlike ``hash()``);
    bigram bucket: the two unigram hashes mixed. Both folded to the low ``bits`` bits."""
    crc = zlib.crc32
    known = {t: crc(t.encode()) for t in counts if _gram_token(t)}
    if not known:
        return set()
    mask = (1 << bits) - 1
    ids = list(map(known.get, tokens))
    out = {h & mask for h in known.values()}
    out.update([(((a * _MIX) ^ b) >> 7) & mask for a, b in set(zip(ids, ids[1:], strict=False))
                if a is not None and b is not None])  # fmt: skip
    return out


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Router(Protocol):
    """What the gateway needs from a router."""

    @property
    def name(self) -> str: ...

    def p_strong(self, prompt: str) -> float: ...

    def choose(self, prompt: str, threshold: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class DifficultyRouter:
    """The learned router: a prior over the hand features, plus a learned correction where it was learned::

        z = prior_bias + prior_weights·hand(prompt)
            + [gate] (bias + hand_weights·hand(prompt) + Σ ngram_weights[bucket] / sqrt(#buckets))
        p_strong = sigmoid(z)

    The prior is the rule router's weights, stored in the file. The correction applies to prompts whose ``gate``
    hand feature is non-zero (``mc_options`` for the shipped file: multiple-choice questions, the format of its
    training data); with no gate it applies to every prompt.

    >>> router = DifficultyRouter.load()  # the packaged weights
    >>> 0.0 < router.p_strong("What is the capital of France?") < 1.0
    True
    """

    bias: float
    hand_weights: tuple[float, ...]
    ngram_weights: Mapping[int, float]
    hash_bits: int
    prior_bias: float = 0.0
    prior_weights: tuple[float, ...] = ()  # none: no prior term
    gate: str | None = None  # a hand feature: the correction applies where it is non-zero; None: everywhere
    name: str = "difficulty-v1"
    source: str = "<memory>"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def score(self, prompt: str) -> float:
        """The logit of :meth:`p_strong`."""
        parsed = _parse(prompt)
        hand = _hand(parsed)
        z = self.prior_bias
        for w, x in zip(self.prior_weights, hand, strict=False):
            z += w * x
        if self.gate is not None and not hand[HAND_FEATURES.index(self.gate)]:
            return z
        z += self.bias
        for w, x in zip(self.hand_weights, hand, strict=True):
            z += w * x
        weights = self.ngram_weights
        if weights:
            buckets = _buckets(parsed.tokens, parsed.counts, self.hash_bits)
            if buckets:
                z += sum(map(weights.get, buckets, repeat(0.0))) / math.sqrt(len(buckets))
        return z

    def p_strong(self, prompt: str) -> float:
        return _sigmoid(self.score(prompt))

    def choose(self, prompt: str, threshold: float) -> bool:
        """True: send the prompt to the strong model."""
        return self.p_strong(prompt) >= threshold

    @classmethod
    def load(cls, path: str | Path | None = None) -> DifficultyRouter:
        """Load weights from ``path`` (gzip or plain JSON), or the packaged default. A file that is missing,
        corrupt, of another format or version raises :class:`~tokenops.errors.ConfigError` naming it."""
        if path is None:
            ref = resources.files("tokenops.optimize") / "data" / DEFAULT_FILE
            with resources.as_file(ref) as p:
                return cls._read(Path(p))
        return cls._read(Path(path))

    @classmethod
    def _read(cls, path: Path) -> DifficultyRouter:
        import orjson

        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError("router weights file not found", file=str(path)) from None
        except OSError as exc:
            raise ConfigError(f"cannot read router weights: {exc.strerror or exc}", file=str(path)) from None
        try:
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            doc = orjson.loads(raw)
        except (OSError, EOFError, zlib.error, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"not a router weights file (corrupt gzip or JSON: {exc})", file=str(path)) from None
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "<memory>") -> DifficultyRouter:
        """Build a router from the weights file's document, checking every field."""

        def bad(why: str) -> ConfigError:
            return ConfigError(why, file=source)

        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise bad(f'not a router weights file (expected "format": "{FORMAT}")')
        if doc.get("version") != VERSION:
            raise bad(f"router weights version {doc.get('version')!r} is not supported (this TokenOps reads "
                      f"version {VERSION}; retrain with bench/train_router.py)")  # fmt: skip
        if doc.get("hand_features") != list(HAND_FEATURES):
            raise bad("router weights were trained on other hand features than this TokenOps computes (retrain "
                      "with bench/train_router.py)")  # fmt: skip
        bias, hand, bits, grams = (doc.get(k) for k in ("bias", "hand_weights", "hash_bits", "ngram_weights"))
        prior_bias, prior, gate = doc.get("prior_bias", 0.0), doc.get("prior_weights", []), doc.get("gate")
        n = len(HAND_FEATURES)
        if not _finite(bias) or not _finite(prior_bias):
            raise bad('"bias" and "prior_bias" must be finite numbers')
        if not isinstance(hand, list) or len(hand) != n or not all(_finite(w) for w in hand):
            raise bad(f'"hand_weights" must be a list of {n} finite numbers')
        if not isinstance(prior, list) or len(prior) not in (0, n) or not all(_finite(w) for w in prior):
            raise bad(f'"prior_weights" must be a list of {n} finite numbers (or empty)')
        if gate is not None and gate not in HAND_FEATURES:
            raise bad(f'"gate" must be null or a hand feature, not {gate!r}')
        if type(bits) is not int or not 1 <= bits <= 30:
            raise bad('"hash_bits" must be an integer from 1 to 30')
        if not isinstance(grams, dict):
            raise bad('"ngram_weights" must be an object of bucket -> weight')
        table: dict[int, float] = {}
        for key, w in grams.items():
            if not (key.isdigit() and int(key) < (1 << bits)) or not _finite(w):
                raise bad(f'"ngram_weights" has a bad entry {key!r}: {w!r} (bucket below 2^hash_bits -> number)')
            table[int(key)] = float(w)
        meta = doc.get("meta") or {}
        return cls(bias=float(bias), hand_weights=tuple(float(w) for w in hand), ngram_weights=table, hash_bits=bits,
                   prior_bias=float(prior_bias), prior_weights=tuple(float(w) for w in prior), gate=gate,
                   name=str(doc.get("name") or "difficulty-v1"), source=source,
                   meta=meta if isinstance(meta, dict) else {})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The weights file's document (what :meth:`from_dict` reads)."""
        return {"format": FORMAT, "version": VERSION, "name": self.name, "hand_features": list(HAND_FEATURES),
                "prior_bias": self.prior_bias, "prior_weights": list(self.prior_weights), "gate": self.gate,
                "bias": self.bias, "hand_weights": list(self.hand_weights), "hash_bits": self.hash_bits,
                "ngram_weights": {str(k): v for k, v in sorted(self.ngram_weights.items())},
                "meta": dict(self.meta)}  # fmt: skip


def _finite(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# Hand-set weights of the rule router, per hand feature (others 0): longer prompts, math, logic, code, enumerated
# parts, negations, conditionals and reasoning verbs raise the score; short chit-chat and open writing lower it.
_RULE_WEIGHTS: dict[str, float] = {
    "log_chars": 0.35, "log_numbers": 0.25, "log_math": 0.35, "log_latex": 0.3, "log_logic": 0.4,
    "log_variables": 0.2, "log_code": 0.35, "code_block": 0.6, "log_enumerated": 0.25, "log_negations": 0.3,
    "log_conditionals": 0.2, "log_reasoning": 0.5, "log_quantity": 0.4, "log_constraints": 0.15,
    "log_open_tasks": -0.3,
}  # fmt: skip
_RULE_BIAS = -3.0


@dataclass(frozen=True, slots=True)
class RuleRouter:
    """The fallback router: hand-set weights over the same hand features (no file, no training).

    >>> RuleRouter().choose("Thanks!", 0.5)
    False
    """

    weights: Sequence[float] = tuple(_RULE_WEIGHTS.get(n, 0.0) for n in HAND_FEATURES)
    bias: float = _RULE_BIAS
    name: str = "rules-v1"

    def score(self, prompt: str) -> float:
        z = self.bias
        for w, x in zip(self.weights, hand_features(prompt), strict=True):
            z += w * x
        return z

    def p_strong(self, prompt: str) -> float:
        return _sigmoid(self.score(prompt))

    def choose(self, prompt: str, threshold: float) -> bool:
        return self.p_strong(prompt) >= threshold


def prompt_text(route: str, body: Mapping[str, Any]) -> str:
    """What the difficulty router reads: the text of the user's turns (the last ones weigh most), or the input."""
    texts: list[str] = []
    turns = body.get("messages") if route in ("chat.completions", "messages") else body.get("input")
    if isinstance(turns, str):
        return turns
    for turn in turns if isinstance(turns, list) else ():
        if isinstance(turn, dict) and turn.get("role") == "user":
            content = turn.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(texts[-3:])


def load_router(path: str | Path | None = None) -> DifficultyRouter:
    """The learned router from ``path``, or the packaged weights (errors name the file)."""
    return DifficultyRouter.load(path)


def default_router() -> Router:
    """The packaged learned router, or the :class:`RuleRouter` when the package ships no weights file."""
    ref = resources.files("tokenops.optimize") / "data" / DEFAULT_FILE
    if not ref.is_file():
        return RuleRouter()
    return DifficultyRouter.load()
