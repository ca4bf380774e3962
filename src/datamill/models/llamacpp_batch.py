"""Continuous batching over llama.cpp's low-level API: many sequences advance in one ``llama_decode``.

:class:`BatchEngine` owns one llama.cpp context with ``width`` sequence slots (``n_seq_max``), each
with its own KV stream (``kv_unified=False``, so a token attends only to its own sequence and
attention cost does not grow with the batch). The streams start at :data:`INITIAL_CTX` cells and
grow, by powers of two up to ``n_ctx``, when an admitted request's prompt + ``max_tokens`` needs
more: the context is rebuilt and the live sequences' KV carried over exactly, so an engine starts
in a tenth of a second and holds only the memory its requests need. Each :meth:`BatchEngine.step`
builds one ``llama_batch`` holding the next token of every decoding sequence plus prompt chunks of
newly admitted sequences (several sequence ids in one batch), decodes it, and samples every
sequence that produced logits with its own sampler chain (grammar → top-p → temperature → seeded
dist, or greedy at temperature 0). A finished sequence leaves the batch at once
(``llama_memory_seq_rm``) and a waiting one takes a slot on the next step: new requests join as
others finish.

Slots stay compact. llama.cpp cuts a batch over several KV streams into micro-batches of
*consecutive* sequence ids, and each micro-batch is a pass over all the weights; with holes left
by finished sequences, a 10-wide decode step became several passes (11-13 ms per token instead
of ~7.5). So when a sequence leaves, the one in the highest slot moves down into its place (a
KV stream copy, exact), and the batch lists sequences in slot order: one pass for all decoding
sequences. Measured on the instructions-basic recipe, 20 rows, embedded model: 57 s before, 50 s
with compact slots, 41 s with the workers also lending each other idle cores
(``llamacpp_worker.CoreShare``, used only for steps whose numbers do not depend on threads).

Prompt prefixes are decoded once per engine: a sequence that starts while another holds (or is
about to hold) the same leading prompt tokens copies that sequence's KV stream
(``llama_memory_seq_cp``), trims it (``llama_memory_seq_rm``) and decodes only its own tail. That
covers ``n > 1`` samples (which also share the prompt's last logits, each sampling with its own
seed) and rows rendered from one template or system prompt.

A text does not depend on what else is in the batch, on when its request joined, on prefix
copies or on lent threads: flash attention computes each token whole on one thread (its
split-across-threads path for a lone token is avoided by running such steps on one thread), and
prompts go in chunks of at most :data:`PREFILL_CHUNK` tokens per sequence and step, below the
size at which llama.cpp switches to a tiled attention kernel with other rounding. Greedy texts of
prompts shorter than 64 tokens therefore equal llama-cpp-python's own; longer prompts are
processed there by the tiled kernel and may differ in near-ties. This sameness is exact, not to a
tolerance: it rests on a token's numbers going through the same kernels in the same order of
sums whatever the grouping, so texts (greedy or seeded) are equal token for token; the real-model
tests in ``tests/test_llamacpp.py`` check it on the CPU kernels of the installed llama-cpp-python.
A build with other kernels (another CPU feature set, a GPU backend) may round differently.

Deliberately not here: loading the GGUF and tokenizing (``llamacpp_gguf``), threads, processes,
asyncio and chat templates (``llamacpp_worker``, ``llamacpp``). The engine is synchronous and
single-threaded; its owner calls :meth:`step` in a loop.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as lc

from .llamacpp_gguf import Weights

#: the shortest shared prompt prefix worth a KV copy (a copy costs less than one prefill token)
MIN_SHARED = 8

#: the most prompt tokens of one sequence per step. llama.cpp's CPU flash attention switches to
#: a tiled kernel (other rounding) for 64 or more query tokens of one sequence in a micro-batch,
#: and how a prompt's tokens fall into micro-batches depends on what else is in the batch and on
#: prefix copies; below 64 every token takes the same kernel, so a text does not depend on its
#: neighbours or on timing. Long prompts take several steps (decoding goes on meanwhile).
PREFILL_CHUNK = 63

#: a step on lent threads must cost at most this share of the engine's own per-token time...
LEND_MIN_GAIN = 0.8
#: ...or lending pauses for this many steps (then one step tries again)
LEND_PAUSE = 50

#: KV cells per sequence of a new engine's context. The KV cache is ``width`` x cells, zeroed by
#: llama.cpp when allocated (16 x 2048 cells of SmolLM2-135M: 755 MB, 0.5-1.5 s here), so an engine
#: starts small and grows (powers of two, up to ``n_ctx``) when a request needs more
INITIAL_CTX = 256


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    if a[:n] == b[:n]:
        return n
    lo, hi = 1, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Job:
    """One request as the engine sees it: a rendered prompt and per-sample sampling settings."""

    id: int
    prompt: str
    n: int = 1
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None  #: sample ``i`` uses ``seed + i``; None draws a random seed
    stop: tuple[str, ...] = ()
    grammar: str | None = None  #: GBNF text (root rule ``root``)
    top_k: int = 0  #: 0 = off
    min_p: float = 0.0  #: 0 = off


@dataclass(frozen=True)
class Sample:
    """One finished sample of a job."""

    text: str
    finish_reason: str  #: "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class JobResult:
    """Either ``samples`` (length ``n``) or an ``error`` with a short ``reason``."""

    id: int
    samples: tuple[Sample, ...] = ()
    error: str | None = None
    reason: str = "model error"
    fatal: bool = False  #: the engine itself stopped: later jobs would fail too


@dataclass(eq=False)
class _Seq:
    """One sample in flight: its slot, sampler chain, tokens and text so far."""

    job: Job
    index: int
    prompt: list[int]
    source: _Seq | None = None  #: while parked: the sequence whose prompt prefix it will copy
    shared: int = 0  #: while parked: how many prompt tokens it will copy
    state: str = "waiting"  #: waiting | parked | prefill | decode | done
    slot: int = -1
    chain: Any = None
    grammar: Any = None  #: the grammar sampler, kept apart from the chain (see _sample)
    pos: int = 0  #: next position to write in this sequence's KV stream
    fed: int = 0  #: prompt tokens already decoded (or queued in the current batch)
    logits_at: int = -1  #: batch index of this sequence's logits in the current batch
    last: int = -1  #: the sampled token that goes into the next batch
    generated: int = 0
    text: str = ""
    finish: str | None = None
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))


class BatchEngine:
    """``width`` sequences decoded together; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        width: int = 16,
        n_ctx: int = 2048,
        n_threads: int = 1,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        flash_attn: bool | None = None,
    ) -> None:
        self.weights = Weights(path, n_gpu_layers=n_gpu_layers)
        self.width = width
        self.n_batch = max(n_batch, width)
        self.n_ctx = n_ctx  #: the most one sequence may hold (prompt + completion)
        params = lc.llama_context_default_params()
        params.n_seq_max = width
        params.kv_unified = False
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        # None lets llama.cpp choose (on, on CPU). With flash attention a sequence's numerics do
        # not depend on what else is in the batch; without it they do (see llamacpp.py)
        params.flash_attn_type = {
            None: lc.LLAMA_FLASH_ATTN_TYPE_AUTO,
            True: lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            False: lc.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[flash_attn]
        self._params = params
        self.base_threads = n_threads
        #: threads this engine may use when others lend theirs (``llamacpp_worker.CoreShare``)
        self.lent_threads = n_threads
        self.threads = n_threads  #: threads of the context now
        self._per_token_own: float | None = None  #: recent seconds per token on own threads
        self._lend_pause = 0  #: steps left before lent threads are tried again
        self.lent_steps = 0  #: counters, for benchmarks and tests
        self.lend_pauses = 0
        self.cap = 0  #: KV cells per sequence in the current context (grows up to n_ctx)
        self.grown = 0  #: how many times the context was rebuilt larger
        cells = min(n_ctx, INITIAL_CTX)
        self.ctx: Any = self._new_context(cells)
        if not self.ctx:
            self.weights.close()
            raise ValueError(f"llama.cpp could not create a context of {width} x {cells} tokens")
        self.batch = lc.llama_batch_init(self.n_batch, 0, 1)
        # scratch for grammar checks: one candidate, or the whole vocabulary
        self._n_vocab = int(lc.llama_vocab_n_tokens(self.weights.vocab))
        self._one = lc.llama_token_data()
        self._one_array = lc.llama_token_data_array(data=ctypes.pointer(self._one), size=1)
        # the whole vocabulary as llama_token_data, and its ids: made when first needed
        self._cands: Any = None
        self._ids: Any = None
        self.slots: list[_Seq | None] = [None] * width  #: who holds each KV stream
        #: cross-stream KV copies queued: llama.cpp makes them at the next decode
        self._copies_pending = False
        self.waiting: deque[_Seq] = deque()
        self.active: list[_Seq] = []  #: parked, prefill and decode sequences, in admission order
        self.jobs: dict[int, list[_Seq]] = {}
        self.tokens_decoded = 0  #: counters, for benchmarks and tests
        self.prompt_tokens_decoded = 0
        self.prefixes_shared = 0  #: KV copies made instead of prefilling
        self.slots_moved = 0  #: sequences moved down to keep the slots compact
        self.prompt_tokens_reused = 0  #: prompt tokens those copies saved
        self.steps = 0
        self.refused: list[JobResult] = []  #: jobs failed while admitting, for the next step

    # -- public -------------------------------------------------------------------------------

    def submit(self, job: Job) -> JobResult | None:
        """Queue a job; returns a :class:`JobResult` at once when it cannot run at all."""
        tokens = self.weights.tokenize(job.prompt)
        if not tokens:
            return JobResult(job.id, error="the prompt is empty", reason="empty prompt")
        if len(tokens) >= self.n_ctx:
            return JobResult(
                job.id,
                error=f"the prompt's {len(tokens)} tokens exceed context window of {self.n_ctx} per sequence: raise n_ctx or shorten the input",
                reason="request too long",
            )
        if job.grammar:  # fail here, not halfway through a batch
            probe = lc.llama_sampler_init_grammar(self.weights.vocab, job.grammar.encode(), b"root")
            if not probe:
                return JobResult(
                    job.id,
                    error="llama.cpp could not parse the grammar of this JSON schema",
                    reason="bad schema",
                )
            lc.llama_sampler_free(probe)
        seqs = [_Seq(job, i, tokens) for i in range(job.n)]
        self.jobs[job.id] = seqs
        self.waiting.extend(seqs)
        return None

    def cancel(self, job_id: int) -> None:
        """Forget a job: its sequences leave the batch and free their slots."""
        seqs = self.jobs.pop(job_id, None)
        if not seqs:
            return
        for s in seqs:
            if s.state == "waiting":
                self.waiting.remove(s)
            self._release(s)
        self.active = [s for s in self.active if s.state != "done"]

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.active)

    @property
    def load(self) -> int:
        """Samples queued or in flight."""
        return len(self.waiting) + len(self.active)

    def step(self) -> list[JobResult]:
        """Admit waiting samples, decode one batch, sample; return the jobs finished by it."""
        self._admit()
        refused, self.refused = self.refused, []
        if not any(s.state in ("prefill", "decode") for s in self.active):
            return refused
        entries = self._fill_batch()
        # Lent threads only where they leave the numbers alone. llama.cpp's CPU flash attention
        # splits the keys of a lone decoding token (one sequence, one token, in a micro-batch)
        # across threads, a thread-dependent sum; and it cuts a batch of several sequences into
        # micro-batches of equal tokens per sequence, so a batch of unequal chunks can leave
        # such a lone token. Safe: one sequence with several tokens, or several in consecutive
        # slots (one micro-batch, see _fill_batch) with one each.
        n, k = len(entries), self.batch.n_tokens
        slots = [s.slot for s in entries]  # sorted
        even = (n == 1 and k > 1) or (n > 1 and k == n and slots[-1] - slots[0] == n - 1)
        lend = even and self.lent_threads > self.base_threads
        if lend and self._lend_pause > 0:
            self._lend_pause -= 1
            lend = False
        self._use_threads(self.lent_threads if lend else self.base_threads)
        began = time.perf_counter()
        rc = lc.llama_decode(self.ctx, self.batch)
        if rc == 0 and even:
            self._time_threads(lend, (time.perf_counter() - began) / k)
        self.steps += 1
        if rc != 0:
            return self._fail_all(f"llama_decode failed with code {rc}")
        self.tokens_decoded += self.batch.n_tokens
        self._copies_pending = False
        for s in entries:
            if s.fed == len(s.prompt):
                s.state = "decode"
        # copies first: a donor that samples its end of text next frees its stream at once
        clones = self._unpark()
        for s in entries:
            if s.state == "decode":
                self._sample(s, s.logits_at)
        for s, at in clones:
            self._sample(s, at)
        return refused + self._collect()

    def _time_threads(self, lent: bool, per_token: float) -> None:
        """Lent threads must pay: a lent step that is not clearly faster per token than recent
        steps on the engine's own threads (as when other programs keep the cores busy, and
        llama.cpp's threads wait on each other) pauses lending for :data:`LEND_PAUSE` steps."""
        own = self._per_token_own
        if lent:
            self.lent_steps += 1
            if own is not None and per_token > LEND_MIN_GAIN * own:
                self._lend_pause = LEND_PAUSE
                self.lend_pauses += 1
        else:
            self._per_token_own = per_token if own is None else 0.7 * own + 0.3 * per_token

    def _use_threads(self, n: int) -> None:
        if n != self.threads:
            lc.llama_set_n_threads(self.ctx, n, n)
            self.threads = n

    def close(self) -> None:
        if self.ctx:
            lc.llama_batch_free(self.batch)
            lc.llama_free(self.ctx)
            self.ctx = None
        for seqs in self.jobs.values():
            for s in seqs:
                self._free_chain(s)
        self.jobs.clear()
        self.weights.close()

    # -- scheduling ---------------------------------------------------------------------------

    def _admit(self) -> None:
        while self.waiting and None in self.slots:
            s = self.waiting[0]
            need = min(self.n_ctx, len(s.prompt) + s.job.max_tokens)
            if need > self.cap and self._copies_pending and any(x.pos for x in self.active):
                break  # growing reads the KV cache: after the next decode has made the copies
            if need > self.cap and not self._grow(need):
                self._refuse(
                    s.job,
                    f"llama.cpp could not allocate {self.width} x {need} tokens of KV cache for this "
                    f"request: lower batch_size, n_ctx or max_tokens",
                    "out of memory",
                )
                continue
            self.waiting.popleft()
            s.slot = self.slots.index(None)  # the lowest: the occupied slots stay 0..n-1
            self.slots[s.slot] = s
            s.chain = self._make_chain(s.job, s.index)
            if s.job.grammar:
                s.grammar = lc.llama_sampler_init_grammar(
                    self.weights.vocab, s.job.grammar.encode(), b"root"
                )
            self.active.append(s)
            self._place(s)

    def _new_context(self, cells: int) -> Any:
        """A llama.cpp context of ``width`` KV streams of at least ``cells`` cells (None if it
        cannot be had); sets :attr:`cap` and :attr:`mem`."""
        self._params.n_ctx = cells * self.width
        ctx = lc.llama_init_from_model(self.weights.model, self._params)
        if ctx:
            self.cap = int(lc.llama_n_ctx_seq(ctx))
            self.mem = lc.llama_get_memory(ctx)
            self.threads = self.base_threads
        return ctx

    def _grow(self, need: int) -> bool:
        """Rebuild the context with room for ``need`` tokens per sequence (the next power of two,
        at most ``n_ctx``), carrying every live sequence's KV over (``llama_state_seq_*``: exact
        copies, so texts do not change). False, with a context of the old size, if llama.cpp
        cannot allocate the new one."""
        cells = max(self.cap, 1)
        while cells < need:
            cells *= 2
        cells = min(cells, self.n_ctx)
        saved: list[tuple[int, Any]] = []
        for s in self.active:
            if s.slot >= 0 and s.pos > 0:
                size = int(lc.llama_state_seq_get_size(self.ctx, s.slot))
                buf = (ctypes.c_uint8 * size)()
                if lc.llama_state_seq_get_data(self.ctx, buf, size, s.slot) != size:
                    raise RuntimeError("llama.cpp could not save a sequence's KV cache")
                saved.append((s.slot, buf))
        old_cap = self.cap
        lc.llama_free(self.ctx)  # first: the old and the new cache need not fit side by side
        self.ctx = self._new_context(cells)
        grown = bool(self.ctx)
        if not grown:
            self.ctx = self._new_context(old_cap)
            if not self.ctx:
                raise RuntimeError(
                    f"llama.cpp could not recreate its context of {self.width} x {old_cap} tokens"
                )
        for slot, buf in saved:
            if lc.llama_state_seq_set_data(self.ctx, buf, len(buf), slot) != len(buf):
                raise RuntimeError("llama.cpp could not restore a sequence's KV cache")
        self.grown += grown
        return grown and self.cap >= need

    def _refuse(self, job: Job, message: str, reason: str) -> None:
        """Fail a job before any of its samples started; the next :meth:`step` returns it."""
        for s in self.jobs.pop(job.id, []):
            if s.state == "waiting":
                self.waiting.remove(s)
            self._release(s)
        self.active = [s for s in self.active if s.state != "done"]
        self.refused.append(JobResult(job.id, error=message, reason=reason))

    def _place(self, s: _Seq) -> None:
        """Start ``s``: copy the longest prompt prefix another sequence holds (or will hold
        once its own prefill gets there: then ``s`` is parked until it does), else prefill."""
        donor, shared = None, 0
        for other in self.active:
            if other is s or other.state not in ("prefill", "decode"):
                continue
            n = _common_prefix(other.prompt, s.prompt)
            if n > shared:
                donor, shared = other, n
        if donor is None or shared < MIN_SHARED:
            s.state, s.fed, s.pos, s.source = "prefill", 0, 0, None
        elif donor.fed >= min(shared, len(s.prompt) - 1):
            self._copy_prefix(s, donor, shared)
        else:
            s.state, s.source, s.shared = "parked", donor, shared

    def _copy_prefix(self, s: _Seq, donor: _Seq, shared: int) -> None:
        """Copy ``donor``'s KV stream and keep its first ``shared`` positions (at least the
        prompt's last token is decoded again, so ``s`` gets logits of its own)."""
        keep = min(shared, len(s.prompt) - 1)
        lc.llama_memory_seq_cp(self.mem, donor.slot, s.slot, -1, -1)
        lc.llama_memory_seq_rm(self.mem, s.slot, keep, -1)
        self._copies_pending = True
        s.state, s.fed, s.pos, s.source = "prefill", keep, keep, None
        self.prefixes_shared += 1
        self.prompt_tokens_reused += keep

    def _unpark(self) -> list[tuple[_Seq, int]]:
        """After a decode: parked sequences whose donor got far enough copy its prefix. One whose
        whole prompt the donor has just finished decoding takes the donor's logits as well and
        is returned with their batch index, to sample."""
        clones: list[tuple[_Seq, int]] = []
        for s in self.active:
            donor = s.source
            if s.state != "parked" or donor is None:
                continue
            if donor.state == "done":
                self._place(s)
            elif s.prompt == donor.prompt and donor.fed == len(donor.prompt) == s.shared:
                lc.llama_memory_seq_cp(self.mem, donor.slot, s.slot, -1, -1)
                self._copies_pending = True
                s.state, s.fed, s.pos, s.source = "decode", len(s.prompt), len(s.prompt), None
                self.prefixes_shared += 1
                self.prompt_tokens_reused += len(s.prompt)
                clones.append((s, donor.logits_at))
            elif donor.fed >= min(s.shared, len(s.prompt) - 1):
                self._copy_prefix(s, donor, s.shared)
        return clones

    def _fill_batch(self) -> list[_Seq]:
        """One token per decoding sequence, then prompt chunks (in admission order) up to
        ``n_batch`` tokens; written in slot order. llama.cpp cuts a batch over several KV streams
        into micro-batches of consecutive sequence ids, each a pass over all the weights, so the
        occupied slots are kept at 0..n-1 (:meth:`_compact`) and the batch lists them in order:
        one pass for all the decoding sequences."""
        plan: list[tuple[_Seq, int]] = []
        room = self.n_batch
        for s in self.active:
            if s.state == "decode":
                plan.append((s, 1))
                room -= 1
        for s in self.active:
            if room <= 0:
                break
            if s.state == "prefill":
                take = min(room, PREFILL_CHUNK, len(s.prompt) - s.fed)
                plan.append((s, take))
                room -= take
        plan.sort(key=lambda entry: entry[0].slot)
        k = 0
        for s, take in plan:
            if s.state == "decode":
                self._put(k, s.last, s.pos, s.slot, True)
                s.pos += 1
                k += 1
            else:
                last = len(s.prompt) - 1
                for j, tok in enumerate(s.prompt[s.fed : s.fed + take]):
                    self._put(k, tok, s.pos, s.slot, s.fed + j == last)
                    s.pos += 1
                    k += 1
                s.fed += take
                self.prompt_tokens_decoded += take
            s.logits_at = k - 1
        self.batch.n_tokens = k
        return [s for s, _ in plan]

    def _put(self, k: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[k] = token
        b.pos[k] = pos
        b.n_seq_id[k] = 1
        b.seq_id[k][0] = seq
        b.logits[k] = logits

    # -- sampling -----------------------------------------------------------------------------

    def _make_chain(self, job: Job, index: int) -> Any:
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if job.temperature <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        if job.top_k > 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(job.top_k))
        if job.top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(job.top_p, 1))
        if job.min_p > 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(job.min_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(job.temperature))
        seed = lc.LLAMA_DEFAULT_SEED if job.seed is None else (job.seed + index) & 0xFFFFFFFF
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def _pick(self, s: _Seq, idx: int) -> int:
        """The next token. Under a grammar: sample freely, then ask the grammar about that one
        token; only when it refuses, mask every token the grammar refuses and sample again
        (llama.cpp's own rejection scheme: the same distribution as masking first, for a
        fraction of the cost, since the model mostly proposes valid JSON by itself)."""
        token = int(lc.llama_sampler_sample(s.chain, self.ctx, idx))
        if s.grammar is None:
            return token
        self._one.id = token  # type: ignore[assignment]  # ctypes converts the int
        self._one.logit, self._one.p = 1.0, 0.0
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        lc.llama_sampler_apply(s.grammar, ctypes.byref(self._one_array))
        if self._one.logit != float("-inf"):
            lc.llama_sampler_accept(s.grammar, token)
            return token
        import numpy as np  # here: a worker that never needs it starts faster

        logits = np.ctypeslib.as_array(
            lc.llama_get_logits_ith(self.ctx, idx), shape=(self._n_vocab,)
        )
        if self._cands is None:
            self._cands = np.zeros(
                self._n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]
            )
            self._ids = np.arange(self._n_vocab, dtype=np.int32)
        cands = self._cands
        cands["id"] = self._ids  # samplers may reorder the array: ids set afresh each time
        cands["logit"] = logits
        cands["p"] = 0.0
        array = lc.llama_token_data_array(
            data=cands.ctypes.data_as(lc.llama_token_data_p),
            size=self._n_vocab,
            selected=-1,
            sorted=False,
        )
        lc.llama_sampler_apply(s.grammar, ctypes.byref(array))
        lc.llama_sampler_apply(s.chain, ctypes.byref(array))
        token = int(cands["id"][array.selected]) if 0 <= array.selected < array.size else token
        lc.llama_sampler_accept(s.grammar, token)
        lc.llama_sampler_accept(s.chain, token)
        return token

    def _sample(self, s: _Seq, idx: int) -> None:
        token = self._pick(s, idx)
        job = s.job
        if self.weights.is_eog(token):
            self._finish(s, "stop")
            return
        s.generated += 1
        before = len(s.text)
        s.text += s.decoder.decode(self.weights.piece(token))
        if job.stop and self._cut_stop(s, before):
            self._finish(s, "stop", flush=False)
        elif s.generated >= job.max_tokens or s.pos >= min(self.n_ctx, self.cap):
            self._finish(s, "length")
        else:
            s.last = token

    @staticmethod
    def _cut_stop(s: _Seq, before: int) -> bool:
        """Cut the text at the first stop string that the new piece completed."""
        longest = max(len(x) for x in s.job.stop)
        start = max(0, before - longest + 1)
        hits = [i for i in (s.text.find(x, start) for x in s.job.stop if x) if i >= 0]
        if not hits:
            return False
        s.text = s.text[: min(hits)]
        return True

    def _finish(self, s: _Seq, reason: str, *, flush: bool = True) -> None:
        if flush:
            s.text += s.decoder.decode(b"", final=True)
        s.finish = reason
        self._release(s)

    def _release(self, s: _Seq) -> None:
        if s.slot >= 0:
            lc.llama_memory_seq_rm(self.mem, s.slot, -1, -1)
            self.slots[s.slot] = None
            s.slot = -1
            self._compact()
        self._free_chain(s)
        s.state = "done"
        for other in self.active:
            if other.state == "parked" and other.source is s:
                self._place(other)  # its donor is gone: find another, or prefill

    def _compact(self) -> None:
        """Move the sequences in the highest slots down into free ones until the occupied
        slots are 0..n-1 (see :meth:`_fill_batch`). A move is a copy of the KV stream (exact,
        queued for the next decode) and costs far less than the decode passes it saves."""
        while True:
            hole = self.slots.index(None) if None in self.slots else self.width
            top = max((i for i, x in enumerate(self.slots) if x is not None), default=-1)
            if top < hole:
                return
            s = self.slots[top]
            assert s is not None
            if s.pos > 0:  # it holds KV (a parked one holds none yet)
                lc.llama_memory_seq_cp(self.mem, top, hole, -1, -1)
                lc.llama_memory_seq_rm(self.mem, top, -1, -1)
                self._copies_pending = True
            self.slots[hole], self.slots[top] = s, None
            s.slot = hole
            self.slots_moved += 1

    @property
    def free_slots(self) -> list[int]:
        return [i for i, x in enumerate(self.slots) if x is None]

    @staticmethod
    def _free_chain(s: _Seq) -> None:
        if s.chain is not None:
            lc.llama_sampler_free(s.chain)
            s.chain = None
        if s.grammar is not None:
            lc.llama_sampler_free(s.grammar)
            s.grammar = None

    def _collect(self) -> list[JobResult]:
        self.active = [s for s in self.active if s.state != "done"]
        done: list[JobResult] = []
        for job_id, seqs in list(self.jobs.items()):
            if all(s.state == "done" for s in seqs):
                del self.jobs[job_id]
                samples = tuple(
                    Sample(s.text, s.finish or "stop", len(s.prompt), s.generated) for s in seqs
                )
                done.append(JobResult(job_id, samples))
        return done

    def _fail_all(self, message: str) -> list[JobResult]:
        failed = [JobResult(job_id, error=message, reason="engine error") for job_id in self.jobs]
        for seqs in self.jobs.values():
            for s in seqs:
                self._free_chain(s)
        self.jobs.clear()
        self.waiting.clear()
        self.active.clear()
        lc.llama_memory_clear(self.mem, True)
        self.slots = [None] * self.width
        self._copies_pending = False
        return failed
