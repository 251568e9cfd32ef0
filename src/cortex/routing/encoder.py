"""The serving path of the router's text root: tokenizer → backbone → masked mean, nothing more.

A routing decision is one short text through MiniLM, so its cost is mostly fixed overhead: HF's
eager forward spends milliseconds in Python (mask building, output objects) for a few dozen tokens.
:class:`TextEncoder` computes exactly the router's text features — the chosen hidden layers
mean-pooled over real tokens and concatenated (:func:`~cortex.routing.model.pool_layers`) — from its
own copy of the backbone, which it can int8-quantize (dynamic, linear layers) and trace into a frozen
TorchScript graph. The trace is
made on a padded batch (so the attention-mask path is recorded) and checked against the eager
backbone on batches of other sizes and lengths; if it disagrees, the eager backbone is used.

The tree's own root is never modified, so a router keeps training, saving and fingerprinting its
fp32 weights while it serves with the fast copy.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from cortex.errors import RoutingError
from cortex.routing.model import TEXT_ROOT, RouterModel, encoder_batch, pool_layers, special_tokens

# texts of different lengths: the trace must handle padding, batch sizes and lengths it was not made with
_PROBE = (
    "fix the flaky CI job",
    "Which drug interactions matter for a patient on warfarin who starts a course of antibiotics?",
    "refactor",
    "Summarize the quarterly revenue figures and explain the change in operating margin year over year.",
    "Prove that the square root of two is irrational.",
)


class _Pooled(torch.nn.Module):
    """Backbone + layer pooling as one module, so that a trace holds both (``(B, T)`` → ``(B, H * L)``)."""

    def __init__(self, backbone: torch.nn.Module, layers: list[int]):
        super().__init__()
        self.backbone, self.layers = backbone, list(layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return pool_layers(self.backbone, input_ids, attention_mask, self.layers)


class TextEncoder:
    """Pooled text features ``(N, H)`` of a router's text root, computed the fast way.

    Args:
        model: the router whose text root (an ``hf`` root, pooling ``mean``, possibly shortened to
            ``text_depth`` layers) to serve.
        quantize: int8 dynamic quantization of the backbone's linear layers (CPU; features move
            slightly, measured by ``benchmarks/router_latency.py`` as fp32/int8 agreement).
        trace: run a frozen TorchScript trace of the backbone (no Python per layer); falls back to
            eager when the trace does not reproduce the eager features.

    Attributes:
        traced: whether the TorchScript trace is in use.
        max_abs_error: largest difference of traced vs eager features on the probe texts (0 if untraced).
    """

    @staticmethod
    def supports(model: RouterModel) -> bool:
        """Whether ``model``'s text root is one this encoder reproduces (an hf backbone)."""
        return model.tree.config.root_specs()[TEXT_ROOT].kind == "hf"

    def __init__(self, model: RouterModel, quantize: bool = False, trace: bool = True):
        if not self.supports(model):
            spec = model.tree.config.root_specs()[TEXT_ROOT]
            raise RoutingError(
                f"The fast text encoder serves an hf text root; this router's text root is kind={spec.kind!r}. "
                "Such a router computes its features with the tree's own root (Router.encode does this)."
            )
        self.tokenizer = model.text_tokenizer()
        self.max_len = model.config.max_text_tokens
        self._special = special_tokens(self.tokenizer)
        self.quantized, self.traced, self.max_abs_error = quantize, False, 0.0
        backbone = copy.deepcopy(model.tree.roots[TEXT_ROOT].model).eval()
        backbone.requires_grad_(False)
        if quantize:
            try:
                with warnings.catch_warnings():  # torch marks eager quantization deprecated in favour of torchao
                    warnings.simplefilter("ignore")
                    # per-channel weight scales: per-tensor ones moved the pooled features of real prompts to a
                    # median cosine of 0.971 with fp32 and cost 1.8 macro-F1 points on the tuning split (per
                    # channel: cosine 0.995, same speed)
                    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
                    backbone = torch.ao.quantization.quantize_dynamic(backbone, {torch.nn.Linear: qconfig},
                                                                      dtype=torch.qint8)
            except (RuntimeError, AttributeError) as e:
                raise RoutingError(
                    f"int8 quantization is not available in this torch build ({e}); serve without --quantize."
                ) from e
        self._eager = _Pooled(backbone, model.config.text_layers).eval()
        self._run = self._run_eager
        self._lock = threading.Lock()  # fast tokenizers are not safe to call from several threads at once
        if trace:
            self._try_trace()

    def _tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(texts), truncation=True, max_length=self.max_len, padding=True,
                               return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"]

    def _run_eager(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._eager(ids, mask)

    def _try_trace(self) -> None:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python values frozen into the graph
            ids, mask = self._tokenize(_PROBE[:2])  # padded: the mask path must be in the graph
            try:
                graph = torch.jit.trace(self._eager, (ids, mask), strict=False, check_trace=False)
                graph = torch.jit.freeze(graph.eval())
            except Exception as e:  # a backbone that cannot be traced still serves, eagerly
                warnings.warn(f"Could not trace the text encoder ({type(e).__name__}: {e}); using eager mode.",
                              stacklevel=3)
                return

            def run(i: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
                return graph(i, m)

            worst = 0.0
            for texts in (_PROBE[:1], _PROBE[1:4], _PROBE):
                i, m = self._tokenize(texts)
                ref, got = self._run_eager(i, m), run(i, m)
                worst = max(worst, float((ref - got).abs().max()))
        if worst > 1e-4:
            warnings.warn(f"The traced text encoder differs from eager by {worst:.2e}; using eager mode.", stacklevel=3)
            return
        self._run, self.traced, self.max_abs_error = run, True, worst

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, H)`` float32 pooled features of ``texts`` (truncated to the router's ``max_text_tokens``)."""
        with self._lock:
            ids, mask = self._tokenize(texts)
        return self._run(ids, mask).float().numpy()

    @torch.inference_mode()
    def from_ids(self, word_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """The same features from word-piece ids already computed (:meth:`RouterModel.word_ids`), so a
        decision tokenizes its text once for both the text and the lexical root."""
        ids, mask = encoder_batch(word_ids, self.max_len, self._special)
        return self._run(ids, mask).float().numpy()
