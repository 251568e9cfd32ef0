"""Selection by config: a run config names a registry model, or ``model_name: null`` for the built-in char LM."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cortex._validate import Problems, build_dataclass, check_known_keys, check_non_empty
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
        """A selection from a config mapping; one :class:`ConfigError` lists every problem."""
        problems = Problems()
        values = dict(cfg)
        if values.get("char_lm") is None:  # `char_lm:` left empty in YAML means "defaults"
            values.pop("char_lm", None)
        elif not isinstance(values["char_lm"], Mapping):
            problems.add(
                f"char_lm={values['char_lm']!r} must be a mapping of CharLMConfig fields, e.g. "
                "char_lm: {num_hidden_layers: 2, hidden_size: 64}.", "char_lm", values["char_lm"],
            )
        model_name = values.get("model_name")
        if model_name is not None and not check_non_empty("model_name", model_name, problems):
            problems.add("model_name names a registry entry (see `cortex models list`); null builds the built-in char_lm.")
        if values.get("chars") is not None:  # null: printable ASCII
            check_non_empty("chars", values["chars"], problems)
        selection = build_dataclass(cls, values, "model selection", problems)
        problems.raise_if_any("model selection")
        return selection


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
    problems = Problems()
    check_known_keys("char_lm", sel.char_lm, CharLMConfig().to_dict(), problems)
    problems.raise_if_any("model selection")
    cfg = CharLMConfig(**{**sel.char_lm, "vocab_size": len(tokenizer)})
    model = CharLMForCausalLM(cfg)
    tokenizer.model_max_length = cfg.max_position_embeddings
    return model, tokenizer, get_family("char_lm")
