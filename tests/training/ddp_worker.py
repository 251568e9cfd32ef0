"""One rank of the DDP test (run by test_ddp.py as two processes over gloo): train a tiny tree, dump it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safetensors.torch import save_file  # noqa: E402

from cortex.tasks import DenoisingLMTask, RegressionTask  # noqa: E402
from cortex.training import TrainSettings, build_tree, fit_tree  # noqa: E402
from tests.training.conftest import synthetic_rows, tiny_tree_dict  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    tasks = [RegressionTask("frac", inputs={"seq": "sequence"}, targets=["frac_a"]),
             DenoisingLMTask("lm", inputs={"seq": "sequence"})]
    torch.manual_seed(int(os.environ["LOCAL_RANK"]))  # different initial weights per rank: DDP must sync them
    tree = build_tree(tiny_tree_dict(), tasks)
    initial = {k: v.clone() for k, v in tree.state_dict().items()}
    settings = TrainSettings(max_epochs=2, batch_size=16, lr=1e-2, accelerator="cpu", devices=2, strategy="ddp",
                             ema_decay=0.9, seed=0)
    result = fit_tree(tree, tasks, synthetic_rows(96, seed=1), synthetic_rows(37, seed=2), settings)
    rank = torch.distributed.get_rank()
    save_file({k: v.contiguous() for k, v in tree.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    changed = sum(not torch.equal(initial[k], v) for k, v in tree.state_dict().items())
    (out / f"rank{rank}.json").write_text(json.dumps({"steps": result.steps, "metrics": result.metrics,
                                                      "changed": changed, "world": torch.distributed.get_world_size()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
