"""Configuration of the built-in char-level causal LM."""

from __future__ import annotations

from transformers import PreTrainedConfig

from cortex._validate import Problems, check_bool, check_fraction, check_positive


class CharLMConfig(PreTrainedConfig):
    """A small pre-norm GPT over characters.

    Args:
        vocab_size: size of the char tokenizer's vocabulary.
        hidden_size: width of the residual stream (must be divisible by ``num_attention_heads``).
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: heads per attention layer.
        intermediate_size: MLP width (default ``4 * hidden_size``).
        max_position_embeddings: longest sequence the learned positions cover.
        dropout: dropout on attention weights and residual branches during training.
        use_cache: whether ``forward`` builds and returns a KV cache when not told (``use_cache=None``).
    """

    model_type = "cortex_char_lm"

    def __init__(
        self,
        vocab_size: int = 101,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 512,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        pad_token_id: int = 0,
        bos_token_id: int = 3,
        eos_token_id: int = 4,
        use_cache: bool = True,
        **kwargs,
    ):
        problems = Problems()
        for field, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size),
                             ("num_hidden_layers", num_hidden_layers), ("num_attention_heads", num_attention_heads),
                             ("max_position_embeddings", max_position_embeddings)):
            check_positive(field, value, problems)
        if not problems and hidden_size % num_attention_heads:
            problems.add(f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}; "
                         "pick sizes such that hidden_size % num_attention_heads == 0.", "hidden_size", hidden_size)
        if intermediate_size is not None:
            check_positive("intermediate_size", intermediate_size, problems)
        check_fraction("dropout", dropout, problems, upper_open=True)
        check_bool("use_cache", use_cache, problems)
        problems.raise_if_any("CharLMConfig")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings, **kwargs,
        )
