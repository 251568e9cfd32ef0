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


def test_the_check_reads_local_folders_and_hub_file_lists(tmp_path, tiny_qwen_dir, fake_hub):
    refuse_pickle_only(tiny_qwen_dir, allow_pickle=False)  # safetensors: passes
    repo = fake_hub.root / "someone" / "pickled"
    shutil.copytree(tiny_qwen_dir, repo)
    (repo / "model.safetensors").rename(repo / "pytorch_model.bin")  # only the name matters to the check
    with pytest.raises(UnsafeWeightsError, match="repo someone/pickled holds only pickle weights"):
        refuse_pickle_only("someone/pickled", allow_pickle=False)
    refuse_pickle_only("someone/pickled", allow_pickle=True)
    refuse_pickle_only("someone/missing", allow_pickle=False)  # unlisted: transformers reports it itself
