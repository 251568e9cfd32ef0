"""Sentence embedders: the packaged MiniLM by default, behind a small protocol.

Every embedder has an ``id`` (its name or class, recorded in the index with ``dim`` so that a
different encoder is refused), a ``dim`` and a token limit. Texts longer than the limit are truncated, never silently: each batch
reports which inputs were cut, and :meth:`Embedder.embed` warns with :class:`TruncationWarning`.

On a CPU with native bfloat16 instructions (AVX512-BF16 or AMX) MiniLM runs its matrix products in
bfloat16 (``precision="auto"``): about half the CPU time of float32 with the same vectors to a cosine
of 0.9999 (``benchmarks/rag_eval.py --precision fp32,bf16`` measures both side by side).
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from cortex._validate import Problems, check_choice


class TruncationWarning(UserWarning):
    """A text was longer than the embedder's token limit and only its start was embedded."""


@dataclass
class EmbeddingBatch:
    """Unit-norm embeddings of a batch of texts.

    Attributes:
        vectors: ``(N, D)`` float32, each row L2-normalised.
        n_tokens: ``(N,)`` token count of each text before truncation (special tokens included).
        truncated: ``(N,)`` bool, True where the text was cut to the embedder's limit.
    """

    vectors: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


@runtime_checkable
class Embedder(Protocol):
    """What the index needs from an encoder: an id, a width, a limit, and unit-norm vectors."""

    id: str
    dim: int
    max_tokens: int

    def embed(self, texts: Sequence[str], warn: bool = True) -> EmbeddingBatch:
        """Embed documents ``texts`` into ``(N, dim)`` unit vectors."""
        ...

    def embed_queries(self, texts: Sequence[str], warn: bool = True) -> EmbeddingBatch:
        """Embed search queries (asymmetric encoders embed them differently from documents)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as this embedder counts them (no truncation)."""
        ...


PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=None)
def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` is a CPU with bfloat16 instructions (AVX512-BF16 or AMX-BF16).

    Elsewhere bfloat16 matrix products are emulated and slower than float32, so ``auto`` keeps float32.
    """
    import torch

    if torch.device(device).type != "cpu":
        return False
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # public in recent torch; absent: say no
    if capabilities is None:
        return False
    found = capabilities()
    return bool(found.get("avx512_bf16") or found.get("amx_bf16"))


def minilm_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2, loadable by ``from_pretrained`` (see :func:`cortex.resources.minilm_dir`)."""
    from cortex.resources import minilm_dir

    return str(minilm_dir())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings: mean of the last hidden state over real tokens, L2-normalised.

    Args:
        max_tokens: limit per text including [CLS]/[SEP]; 256 is what the model was trained with,
            512 is its position limit.
        batch_size: texts per forward pass; texts are sorted by length so padding stays small.
        model_dir: a folder with the same model (defaults to the packaged one).
        device: torch device for the forward pass.
        precision: ``fp32``; ``bf16`` (matrix products in bfloat16 under autocast, layer norms,
            softmax and pooling in float32); or ``auto``: ``bf16`` on a CPU with native bfloat16
            instructions (:func:`native_bf16`), ``fp32`` elsewhere.
        workers: threads that run whole batches at once, each on one intra-op thread; ``None``: as
            many as the caller's ``torch.get_num_threads()`` (the same CPU budget, spent on whole
            batches rather than inside each operator). ``torch.set_num_threads(1)`` keeps it to one.

    The model loads on first use, so opening an index for BM25 search costs nothing. The ``id``
    does not name the precision: bf16 and fp32 vectors agree to a cosine of 0.9999 (tested), so an
    index built with one is searched with the other, as one built on another BLAS would be.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384
    position_limit = 512

    def __init__(self, max_tokens: int = 256, batch_size: int = 32, model_dir: str | None = None,
                 device: str = "cpu", precision: str = "auto", workers: int | None = None):
        problems = Problems()
        if not 8 <= max_tokens <= self.position_limit:
            problems.add(f"max_tokens={max_tokens} is outside [8, {self.position_limit}] for {self.name}; "
                         "use 256 (its training length) unless you know better.", "max_tokens", max_tokens)
        if batch_size < 1:
            problems.add(f"batch_size={batch_size} must be at least 1.", "batch_size", batch_size)
        check_choice("precision", precision, PRECISIONS, problems)
        if workers is not None and workers < 1:
            problems.add(f"workers={workers} must be at least 1 (or None: one per torch thread).", "workers", workers)
        problems.raise_if_any(f"{self.name} embedder")
        self.precision = precision
        self.workers = workers
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.model_dir = model_dir or minilm_path()
        self.device = device
        self.id = f"{self.name}/mean-l2/max{max_tokens}"
        self._tokenizer = None
        self._model = None
        self._lock = threading.Lock()

    @property
    def uses_bf16(self) -> bool:
        """Whether the forward pass runs under bfloat16 autocast (``precision`` resolved on this device)."""
        return self.precision == "bf16" or (self.precision == "auto" and native_bf16(self.device))

    @property
    def tokenizer(self):
        """The model's fast WordPiece tokenizer (loaded once)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model_dir)
            tok.model_max_length = 1 << 30  # we truncate ourselves (and say so); silence its own warning
            self._tokenizer = tok
        return self._tokenizer

    def _load_model(self):
        with self._lock:
            if self._model is None:
                from transformers import AutoModel
                from transformers.utils import logging as hf_logging

                bar_was_on = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()  # a per-weight bar is noise inside `cortex rag` output
                try:
                    model = AutoModel.from_pretrained(self.model_dir, use_safetensors=True)
                finally:
                    if bar_was_on:
                        hf_logging.enable_progress_bar()
                self._model = model.to(self.device).eval()
        return self._model

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def _encode_ids(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        tok = self.tokenizer
        full = tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        n_tokens = np.array([len(ids) for ids in full], dtype=np.int64)
        # Same cut as the tokenizer's own truncation: keep [CLS] + the first tokens, end with [SEP].
        cut = [ids if len(ids) <= self.max_tokens else ids[: self.max_tokens - 1] + [tok.sep_token_id]
               for ids in full]
        return cut, n_tokens

    def _workers_for(self, n_texts: int) -> int:
        """Threads to run forward passes on: ``workers``, or the caller's torch thread count, at most one per text."""
        import torch

        return max(1, min(self.workers or torch.get_num_threads(), n_texts))

    def _batches(self, lengths: Sequence[int], workers: int) -> list[np.ndarray]:
        """Row indices of each forward pass: sorted by length (little padding), at most ``batch_size`` rows,
        and small enough that every worker gets a batch."""
        order = np.argsort(lengths, kind="stable")
        size = min(self.batch_size, -(-len(order) // workers))
        return [order[s : s + size] for s in range(0, len(order), size)]

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        """Unit-norm mean-pooled vectors ``(len(ids), dim)`` of token-id rows (one padded forward pass)."""
        import torch

        model = self._load_model()
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for j, row in enumerate(ids):
            input_ids[j, : len(row)] = torch.tensor(row)
            mask[j, : len(row)] = 1
        # inference mode and autocast are per thread, so each forward pass (whichever worker runs it) enters both
        autocast = torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.uses_bf16)
        with torch.inference_mode():
            with autocast:
                hidden = model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            hidden = hidden.float()  # pool and normalise in float32 whatever the matmuls ran in
            m = mask.to(hidden.device, hidden.dtype).unsqueeze(-1)  # (B, T, 1)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, D)
            return torch.nn.functional.normalize(pooled, p=2, dim=-1).cpu().numpy()

    def _run_batches(self, ids: list[list[int]], out: np.ndarray) -> None:
        """Fill ``out`` with the vectors of ``ids``, whole batches spread over the workers."""
        import torch

        workers = self._workers_for(len(ids))
        batches = self._batches([len(x) for x in ids], workers)

        def run(rows: np.ndarray) -> None:
            out[rows] = self._forward([ids[r] for r in rows])

        if workers == 1 or len(batches) == 1:
            for rows in batches:
                run(rows)
            return
        # Each worker runs one intra-op thread: whole batches in parallel need no per-operator barrier,
        # which on a busy CPU costs more than it gains (benchmarks/rag_index_speed.py). Thread counts set in a
        # worker are its own, but torch also keeps the last one as the default of threads started
        # later, so the caller's count is put back.
        before = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                list(pool.map(run, batches))
        finally:
            torch.set_num_threads(before)

    def embed(self, texts: Sequence[str], warn: bool = True) -> EmbeddingBatch:
        """Embed ``texts`` → :class:`EmbeddingBatch` with ``vectors`` of shape ``(N, 384)``."""
        texts = list(texts)
        if not texts:
            return EmbeddingBatch(np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
        ids, n_tokens = self._encode_ids(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        self._run_batches(ids, out)
        truncated = n_tokens > self.max_tokens
        if warn and truncated.any():
            worst = int(n_tokens.max())
            warnings.warn(
                f"{int(truncated.sum())} of {len(texts)} text(s) exceed {self.name}'s limit of {self.max_tokens} "
                f"tokens (longest {worst}); only their first {self.max_tokens} tokens were embedded. "
                "Shorten the text or split it to have all of it count.",
                TruncationWarning,
                stacklevel=2,
            )
        return EmbeddingBatch(out, n_tokens, truncated)

    def embed_queries(self, texts: Sequence[str], warn: bool = True) -> EmbeddingBatch:
        """MiniLM is symmetric: queries are embedded exactly like documents."""
        return self.embed(texts, warn=warn)


_DEFAULT: dict[tuple[int, str], MiniLMEmbedder] = {}


def default_embedder(max_tokens: int = 256, precision: str = "auto") -> MiniLMEmbedder:
    """The shared default MiniLM embedder (one model per process, limit and precision)."""
    key = (max_tokens, precision)
    if key not in _DEFAULT:
        _DEFAULT[key] = MiniLMEmbedder(max_tokens=max_tokens, precision=precision)
    return _DEFAULT[key]
