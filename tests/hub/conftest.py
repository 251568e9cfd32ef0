from __future__ import annotations

from pathlib import Path

import pytest


def make_tiny_qwen(folder: Path, seed: int = 0) -> Path:
    """A real Qwen2 causal LM (hidden 32, 2 layers) with cortex's char tokenizer, saved with save_pretrained."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from cortex.data.tokenizers import build_char_tokenizer

    torch.manual_seed(seed)
    tok = build_char_tokenizer()
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    return make_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))
