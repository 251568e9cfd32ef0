"""Registry and folder loads read safetensors only; pickle weights need allow_pickle=True (issue 14)."""

from __future__ import annotations

import shutil

import pytest
import torch

from cortex.errors import UnsafeWeightsError
from cortex.hub.loading import load_model, refuse_pickle_only


def test_pickle_only_folder_is_refused_then_loads_with_the_flag(tmp_path, tiny_qwen_dir):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_qwen_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir).eval()
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError, match=rf"{folder}.*pytorch_model\.bin.*allow_pickle=True.*--allow-pickle"):
        load_model(folder)
    loaded = load_model(folder, allow_pickle=True)
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits)


def test_safetensors_folders_and_hub_ids_pass_the_check(tiny_qwen_dir):
    refuse_pickle_only(tiny_qwen_dir, allow_pickle=False)
    refuse_pickle_only("someone/a-hub-repo", allow_pickle=False)  # left to use_safetensors=True in transformers
