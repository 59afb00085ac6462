"""The difficulty router at run time: the packaged weights load and rank hard prompts above trivial ones, the rule
fallback has the same interface, features and hashing are stable, and a bad weights file is a ConfigError naming it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tokenops.errors import ConfigError
from tokenops.optimize import router as R
from tokenops.optimize.router import DifficultyRouter, RuleRouter, default_router, gram_buckets, hand_features

TRIVIAL = ["hi", "Thanks!", "What color is the sky?", "Say hello to my friend Bob."]
HARD = [
    "Prove that for every prime p > 3, p^2 - 1 is divisible by 24.\nI. p is odd\nII. p = 6k ± 1\nIII. 3 | p^2 - 1",
    "Implement an LRU cache with O(1) get and put:\n```python\nclass LRU:\n    def get(self, key): ...\n```\n"
    "Explain why your solution is thread-safe and derive its memory use.",
    "Statement 1 | Every group of order 15 is cyclic. Statement 2 | If H and K are subgroups of G, then HK is a "
    "subgroup of G.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:",
]


@pytest.fixture(scope="module")
def shipped() -> DifficultyRouter:
    return DifficultyRouter.load()


def test_the_packaged_weights_load_and_are_small(shipped: DifficultyRouter) -> None:
    assert shipped.name == "difficulty-v1"
    assert shipped.source.endswith(R.DEFAULT_FILE)
    assert len(shipped.hand_weights) == len(R.HAND_FEATURES)
    assert shipped.ngram_weights  # hashed n-grams are part of the model
    assert shipped.meta["held_out"]["n"] > 1000  # the training script records its held-out figures
    size = Path(shipped.source).stat().st_size
    assert size < 1_000_000


def test_hard_prompts_rank_above_trivial_ones(shipped: DifficultyRouter) -> None:
    for router in (shipped, RuleRouter()):
        easy = [router.p_strong(p) for p in TRIVIAL]
        hard = [router.p_strong(p) for p in HARD]
        assert all(0.0 < x < 1.0 for x in easy + hard)
        assert min(hard) > max(easy), (router.name, easy, hard)


def test_the_learned_correction_applies_to_multiple_choice_prompts_only(shipped: DifficultyRouter) -> None:
    assert shipped.gate == "mc_options" and len(shipped.prior_weights) == len(R.HAND_FEATURES)
    mc = "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:"
    prior_only = DifficultyRouter(**{**{f: getattr(shipped, f) for f in ("prior_bias", "prior_weights", "hash_bits")},
                                     "bias": 0.0, "hand_weights": (0.0,) * len(R.HAND_FEATURES), "ngram_weights": {}})
    for prompt in TRIVIAL + HARD[:2]:  # not multiple choice: the prior alone
        assert shipped.p_strong(prompt) == pytest.approx(prior_only.p_strong(prompt))
    assert shipped.p_strong(mc) != pytest.approx(prior_only.p_strong(mc))
    ungated = DifficultyRouter(bias=1.0, hand_weights=(0.0,) * len(R.HAND_FEATURES), ngram_weights={}, hash_bits=8)
    gated = DifficultyRouter(bias=1.0, hand_weights=(0.0,) * len(R.HAND_FEATURES), ngram_weights={}, hash_bits=8,
                             gate="mc_options")  # fmt: skip
    assert ungated.score("hi") == 1.0 and gated.score("hi") == 0.0 and gated.score(mc) == 1.0


def test_choose_compares_p_strong_with_the_threshold(shipped: DifficultyRouter) -> None:
    p = shipped.p_strong(HARD[0])
    assert shipped.choose(HARD[0], p) is True
    assert shipped.choose(HARD[0], p + 1e-9) is False
    assert RuleRouter().choose("Thanks!", 0.5) is False


def test_default_router_is_the_packaged_one() -> None:
    router = default_router()
    assert isinstance(router, DifficultyRouter)


def test_scores_are_deterministic_and_cope_with_any_text(shipped: DifficultyRouter) -> None:
    odd = ["", " ", "\x00\x01", "数学の証明を書いてください。" * 50, "9" * 50_000, "= + - * / ^ " * 1000, "é" * 20_000]
    for text in odd:
        a = shipped.p_strong(text)
        assert 0.0 <= a <= 1.0 and a == shipped.p_strong(text)
        assert len(hand_features(text)) == len(R.HAND_FEATURES)


def test_a_long_prompt_is_read_in_a_bounded_window() -> None:
    # only WINDOW + TAIL characters are read: the middle of a huge prompt does not change its features but length
    head, tail = "Prove that x > 0. " * 400, " Explain why." * 200
    a = hand_features(head + "a b c " * 50_000 + tail)
    b = hand_features(head + "z z z " * 50_000 + tail)
    assert a[1:] == b[1:]


def test_hashing_is_stable_across_runs_and_versions() -> None:
    # a change here silently invalidates every trained weights file: bump router.VERSION with it
    assert sorted(gram_buckets("Which of the following is NOT true?", 18)) == sorted(
        gram_buckets("which of the following is not true ?", 18))
    assert gram_buckets("hello world", 18) == {42630, 191187, 201027}
    assert gram_buckets("12 + 7 = 19", 18) == set()  # numbers and math symbols are never n-grams


def test_to_dict_from_dict_round_trip(shipped: DifficultyRouter) -> None:
    again = DifficultyRouter.from_dict(json.loads(json.dumps(shipped.to_dict())))
    for prompt in TRIVIAL + HARD:
        assert again.p_strong(prompt) == pytest.approx(shipped.p_strong(prompt), abs=1e-12)


def write(path: Path, doc: object, *, gz: bool = False) -> Path:
    raw = json.dumps(doc).encode()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def good_doc() -> dict[str, object]:
    return DifficultyRouter(bias=0.1, hand_weights=(0.0,) * len(R.HAND_FEATURES), ngram_weights={5: 0.2},
                            hash_bits=10).to_dict()  # fmt: skip


def test_a_plain_or_gzip_file_loads(tmp_path: Path) -> None:
    for gz in (False, True):
        router = DifficultyRouter.load(write(tmp_path / f"w{gz}.json", good_doc(), gz=gz))
        assert router.ngram_weights == {5: 0.2} and router.bias == 0.1


@pytest.mark.parametrize(("change", "why"), [
    ({"format": "something-else"}, "not a router weights file"),
    ({"version": 2}, "version 2 is not supported"),
    ({"hand_features": ["log_chars"]}, "other hand features"),
    ({"bias": "x"}, '"bias" and "prior_bias" must be finite numbers'),
    ({"hand_weights": [1.0]}, '"hand_weights" must be a list'),
    ({"hash_bits": 0}, '"hash_bits" must be an integer'),
    ({"ngram_weights": []}, '"ngram_weights" must be an object'),
    ({"ngram_weights": {"2048": 1.0}}, "bad entry"),
    ({"ngram_weights": {"x": 1.0}}, "bad entry"),
    ({"prior_weights": [1.0, 2.0]}, '"prior_weights" must be a list'),
    ({"prior_bias": None}, '"bias" and "prior_bias" must be finite numbers'),
    ({"gate": "no_such_feature"}, '"gate" must be null or a hand feature'),
])  # fmt: skip
def test_a_wrong_file_is_a_config_error_naming_it(tmp_path: Path, change: dict[str, object], why: str) -> None:
    path = write(tmp_path / "weights.json", good_doc() | change)
    with pytest.raises(ConfigError) as info:
        DifficultyRouter.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert why in str(info.value)


@pytest.mark.parametrize("content", [b"", b"{", b"\x1f\x8b\x08\x00\x00\x00", b"\xff\xfe not json", b"[1, 2]"])
def test_a_corrupt_file_is_a_config_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "router-v1.json.gz"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="router-v1.json.gz: not a router weights file"):
        DifficultyRouter.load(path)


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.json: router weights file not found"):
        DifficultyRouter.load(tmp_path / "nope.json")
