"""Selection by config: a run config names a registry model, or ``model_name: null`` for the built-in char LM."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cortex.errors import ConfigError
from cortex.hub.registry import Registry


@dataclass
class ModelSelection:
    """The model part of a run config.

    ``model_name`` is a registry name (or local folder). ``None`` builds cortex's char-level
    transformer from ``char_lm`` (any :class:`~cortex.models.char_lm.CharLMConfig` fields) with a
    char tokenizer over ``chars`` (default: printable ASCII).
    """

    model_name: str | None = None
    char_lm: dict[str, Any] = field(default_factory=dict)
    chars: str | None = None

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "ModelSelection":
        known = {f.name for f in fields(cls)}
        for key in cfg:
            if key not in known:
                raise ConfigError.unknown_key(key, known, "model selection")
        values = dict(cfg)
        if values.get("char_lm") is None:  # `char_lm:` left empty in YAML means "defaults"
            values.pop("char_lm", None)
        elif not isinstance(values["char_lm"], Mapping):
            raise ConfigError(
                f"char_lm={values['char_lm']!r} must be a mapping of CharLMConfig fields, e.g. "
                "char_lm: {num_hidden_layers: 2, hidden_size: 64}."
            )
        model_name = values.get("model_name")
        if model_name is not None and (not isinstance(model_name, str) or not model_name.strip()):
            raise ConfigError(
                f"model_name={model_name!r} must be a registry name (see `cortex models list`) or null for the "
                "built-in char_lm."
            )
        chars = values.get("chars")
        if chars is not None and (not isinstance(chars, str) or not chars):
            raise ConfigError(f"chars={chars!r} must be a non-empty string of characters, or null for printable ASCII.")
        return cls(**values)


def build_model(selection: ModelSelection | Mapping[str, Any], registry: Registry | None = None):
    """``(model, tokenizer, family)`` for a selection: loaded from the registry, or a fresh char LM."""
    from cortex.hub.families import get_family
    from cortex.hub.loading import load_model

    sel = selection if isinstance(selection, ModelSelection) else ModelSelection.from_mapping(selection)
    if sel.model_name is not None:
        loaded = load_model(sel.model_name, registry=registry)
        return loaded.model, loaded.tokenizer, loaded.family

    from cortex.data.tokenizers import DEFAULT_CHARS, build_char_tokenizer
    from cortex.models.char_lm import CharLMConfig, CharLMForCausalLM

    tokenizer = build_char_tokenizer(sel.chars or DEFAULT_CHARS)
    known = set(CharLMConfig().to_dict())
    for key in sel.char_lm:
        if key not in known:
            raise ConfigError.unknown_key(key, known, "char_lm")
    cfg = CharLMConfig(**{**sel.char_lm, "vocab_size": len(tokenizer)})
    model = CharLMForCausalLM(cfg)
    tokenizer.model_max_length = cfg.max_position_embeddings
    return model, tokenizer, get_family("char_lm")
