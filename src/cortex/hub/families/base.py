"""The family-adapter interface: how cortex loads, saves, generates with and hooks one architecture family."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from cortex.errors import InputError, UnsafeWeightsError


@dataclass
class GenerationSettings:
    """Sampling settings for :meth:`FamilyAdapter.generate` (``temperature=0`` means greedy)."""

    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens={self.max_new_tokens} must be at least 1.")
        if self.temperature < 0:
            raise InputError(f"temperature={self.temperature} must be >= 0 (0 is greedy).")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p={self.top_p} must be in (0, 1].")


def has_pickle_weights_only(folder: Path) -> bool:
    """True when ``folder`` holds ``.bin``/``.pt``/``.pth`` weights and no ``.safetensors``."""
    names = [p.name for p in folder.iterdir() if p.is_file()]
    pickles = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    return bool(pickles) and not any(n.endswith(".safetensors") for n in names)


class FamilyAdapter:
    """One architecture family behind a small interface.

    Subclasses set ``name``, ``model_types`` (the ``config.model_type`` values they handle), ``task``
    (``causal_lm`` or ``encoder``) and ``auto_class``; override :meth:`layers` when the blocks hooks
    attach to are not found by the default search.
    """

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    task: ClassVar[str]
    description: ClassVar[str] = ""

    def auto_class(self) -> Any:
        raise TypeError(f"{type(self).__name__} must define auto_class()")

    def matches(self, config: Any) -> bool:
        return getattr(config, "model_type", None) in self.model_types

    def load_config(self, path: str | os.PathLike, trust_remote_code: bool = False) -> Any:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)

    def load_tokenizer(self, path: str | os.PathLike, trust_remote_code: bool = False) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)

    def load(
        self,
        path: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
    ) -> tuple[nn.Module, Any]:
        """Load ``(model, tokenizer)`` from a local folder, in eval mode, from safetensors only
        unless ``allow_pickle``."""
        folder = Path(path)
        if not allow_pickle and has_pickle_weights_only(folder):
            raise UnsafeWeightsError(
                f"{folder} has only pickle weights (.bin/.pt), which can run code when loaded. Convert them "
                "with: cortex import-model <folder> --allow-pickle (writes safetensors)."
            )
        # Safetensors whenever the folder has them, even with allow_pickle: the flag permits a
        # pickle-only folder, it never makes a pickle preferred over safetensors beside it.
        pickle_only = has_pickle_weights_only(folder)
        model = self.auto_class().from_pretrained(
            folder, dtype=dtype, use_safetensors=not pickle_only, trust_remote_code=trust_remote_code
        )
        model.eval()
        return model, self.load_tokenizer(folder, trust_remote_code)

    def save(self, model: nn.Module, tokenizer: Any, path: str | os.PathLike) -> None:
        """Save as safetensors plus tokenizer files."""
        model.save_pretrained(path, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)

    def layers(self, model: nn.Module) -> list[nn.Module]:
        """The repeated blocks that lens and steering hooks attach to, in depth order.

        Default: the first ``nn.ModuleList`` whose length equals ``config.num_hidden_layers``.
        """
        n = getattr(model.config, "num_hidden_layers", None)
        for _, module in model.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) and (n is None or len(module) == n):
                return list(module)
        raise InputError(
            f"Could not find the layer list of a {type(model).__name__}; give the family adapter "
            f"{self.name!r} a layers() override."
        )

    def generate(
        self,
        model: nn.Module,
        tokenizer: Any,
        prompt: str,
        settings: GenerationSettings,
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        """Generate a continuation of ``prompt``; ``on_text`` receives text pieces as they are produced."""
        from cortex.errors import CortexError

        raise CortexError(
            f"Family {self.name!r} ({self.task}) cannot generate text; generation needs a causal LM family "
            "(see: cortex models families)."
        )


def stream_generate(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    settings: GenerationSettings,
    on_text: Callable[[str], None] | None = None,
) -> str:
    """Sample from a causal LM through :func:`cortex.generation.generate_ids` (KV cache on), streaming decoded
    text to ``on_text``."""
    from transformers.generation.streamers import BaseStreamer

    class _Streamer(BaseStreamer):
        """Decodes the growing token list and emits only the new suffix (robust to multi-byte pieces)."""

        def __init__(self) -> None:
            self.ids: list[int] = []
            self.text = ""
            self.prompt_done = False

        def put(self, value: torch.Tensor) -> None:
            if not self.prompt_done:  # generate() first sends the prompt
                self.prompt_done = True
                return
            self.ids.extend(value.reshape(-1).tolist())
            text = tokenizer.decode(self.ids, skip_special_tokens=True)
            if on_text is not None and len(text) > len(self.text) and not text.endswith("\ufffd"):
                on_text(text[len(self.text):])
                self.text = text

        def end(self) -> None:
            text = tokenizer.decode(self.ids, skip_special_tokens=True)
            if on_text is not None and len(text) > len(self.text):
                on_text(text[len(self.text):])
            self.text = text

    from cortex.generation import encode_prompts, generate_ids, pad_token_id

    ids, mask = encode_prompts(tokenizer, prompt, model.device)
    streamer = _Streamer()
    generate_ids(model, ids, mask, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                 top_p=settings.top_p, seed=settings.seed, pad_token_id=pad_token_id(tokenizer), streamer=streamer)
    return streamer.text


def iter_weight_files(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            yield p
