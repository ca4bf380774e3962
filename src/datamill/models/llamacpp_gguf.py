"""A GGUF file loaded through llama.cpp's low-level API: tokenizer, token pieces and metadata.

:class:`Weights` holds the ``llama_model`` (weights, or the vocabulary alone with
``vocab_only=True``: what the parent process needs to render chat templates and count tokens).
Importing this module quiets llama.cpp's info logs (errors still show).

Deliberately not here: contexts, batches and sampling (``llamacpp_batch``).
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import llama_cpp as lc

#: llama-cpp-python routes llama.cpp's logs through this logger; keep errors only
logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


class Weights:
    """A loaded GGUF (weights, or the vocabulary alone): tokenizer, pieces and metadata."""

    def __init__(
        self, path: str | Path, *, vocab_only: bool = False, n_gpu_layers: int = 0
    ) -> None:
        lc.llama_backend_init()
        params = lc.llama_model_default_params()
        params.vocab_only = vocab_only
        params.n_gpu_layers = n_gpu_layers
        self.model = lc.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ValueError(f"llama.cpp could not load {path} (not a GGUF model file?)")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_ctx_train = int(lc.llama_model_n_ctx_train(self.model))
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)

    def close(self) -> None:
        if self.model:
            lc.llama_model_free(self.model)
            self.model = None

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Tokens of ``text`` with special tokens parsed (as llama-cpp-python tokenizes prompts)."""
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (lc.llama_token * size)()
        n = lc.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
        if n < 0:
            size = -n
            buf = (lc.llama_token * size)()
            n = lc.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a generated token contributes to the text (control tokens render empty)."""
        cached = self._pieces.get(token)
        if cached is None:
            n = lc.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
            cached = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def is_eog(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = lc.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def special_tokens(self) -> tuple[str, str]:
        """(bos, eos) token texts, for chat templates."""
        return self.token_text(lc.llama_vocab_bos(self.vocab)), self.token_text(
            lc.llama_vocab_eos(self.vocab)
        )

    def metadata(self, key: str) -> str | None:
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = lc.llama_model_meta_val_str(self.model, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:
            buf = ctypes.create_string_buffer(n + 1)
            lc.llama_model_meta_val_str(self.model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", errors="replace")


def gguf_metadata(path: str | Path, keys: list[str]) -> dict[str, str]:
    """The string values of ``keys`` in a GGUF file's header, read by llama.cpp (vocabulary only:
    about 0.2 s for the embedded model, no weights). Keys the file lacks are left out.

    Raises ``ValueError`` for a file llama.cpp cannot load (not a GGUF file, a cut one).
    """
    weights = Weights(path, vocab_only=True)
    try:
        found = {key: weights.metadata(key) for key in keys}
    finally:
        weights.close()
    return {key: value for key, value in found.items() if value is not None}
