"""Does the lens monitor read what the model wrote? The monitor's per-token concept scores vs a full re-read.

``cortex lens monitor`` (library: :func:`cortex.steering.monitor.run_monitor`) scores every generated token from
the hidden states ``generate()`` produced step by step with its KV cache. If the cached forward is right, those
states equal the ones of ONE full forward over prompt + generated text, so the monitor's scores must equal the
scores of that re-read. This script measures the gap, on the steering demo (``benchmarks/steering_effect.py``
builds it; pass its ``--home``), greedy, no steering, on held-out prompts of both kinds:

- ``max_abs_gap`` / ``mean_abs_gap``: monitor score vs re-read score, over every generated token and concept
  (the monitor rounds scores to 5 decimals, so ~1e-5 is agreement);
- ``python_score`` per prompt kind: the mean ``python`` probability over the generated tokens (monitor's own);
- ``judge_accuracy``: the demo's external n-gram judge (fit on the training documents, never sees the model)
  calling each continuation the kind of its prompt (``judged`` of them; an all-whitespace continuation is not
  judged and is counted in ``empty_continuations``).

Splits: the model, probes and judge were fit on the demo's training documents; the prompts are held-out
documents; nothing is tuned. Prints ONE JSON line. Usage::

    python benchmarks/lens_monitor_cache.py --home DIR [--prompts 6] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the demo (corpus, judge, build) is an example over library calls, not part of the cortex package
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from _machine import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", required=True, help="Registry home where steering_effect.py built the demo.")
    ap.add_argument("--prompts", type=int, default=6, help="Held-out prompts per kind.")
    ap.add_argument("--tokens", type=int, default=48, help="Tokens generated per prompt.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2400, help="Training steps the demo was built with (as steering_effect).")
    ap.add_argument("--chars-per-kind", type=int, default=210_000, help="Corpus size the demo was built with.")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ["CORTEX_HOME"] = args.home
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from cortex.hub.loading import load_model
    from cortex.hub.registry import Registry
    from cortex.lenses.capture import ActivationCapture, forward_module
    from cortex.lenses.lens_pack import load_lens_pack
    from steering_demo import CharNgramClassifier, DemoSettings, demo_corpus
    from cortex.steering.monitor import MonitorSettings, run_monitor

    # the same settings as the build, so that the held-out prompts are the ones the model never saw
    settings = DemoSettings(steps=args.steps, chars_per_kind=args.chars_per_kind)
    reg = Registry(args.home)
    loaded = load_model(settings.name, registry=reg)
    pack = load_lens_pack(f"lens-{settings.name}", registry=reg)
    train, heldout = demo_corpus(settings)
    judge = CharNgramClassifier().fit(train)
    model, tok = loaded.model, loaded.tokenizer

    @torch.inference_mode()
    def reread(ids: list[int], concepts: list[str]) -> torch.Tensor:
        """``(T, C)`` concept probabilities of one full forward (no cache) over ``ids``."""
        x = torch.tensor([ids])
        layers = sorted({pack.primary(c)[0] for c in concepts})
        with ActivationCapture(loaded.layers(), layers, stop_after_last=True) as cap:
            cap.run(lambda: forward_module(model)(input_ids=x))
            cols = [torch.sigmoid(pack.primary(c)[1](cap.tokens(pack.primary(c)[0])[0].float())) for c in concepts]
        return torch.stack(cols, dim=-1)

    gaps, py_score, correct = [], {"python": [], "prose": []}, []
    for kind in ("python", "prose"):
        for doc in heldout[kind][: args.prompts]:
            prompt = doc[:24]
            r = run_monitor(loaded, pack, prompt, settings=MonitorSettings(max_new_tokens=args.tokens, divergence=None))
            p_ids = tok(prompt)["input_ids"]
            full = reread(p_ids + r.token_ids, r.concepts)                 # (P + n, C)
            # row k of the monitor reads the newest position of forward call k: position P - 1 + k
            want = full[len(p_ids) - 1: len(p_ids) - 1 + len(r.token_ids)]
            got = torch.tensor(r.scores).reshape(len(r.token_ids), len(r.concepts))
            gaps.append((got - want).abs())
            py_score[kind].append(float(got[:, r.concepts.index("python")].mean()))
            if r.text.strip():
                correct.append(float(judge.predict(r.text) == kind))
    gap = torch.cat([g.flatten() for g in gaps])
    print(json.dumps({
        "benchmark": "lens_monitor_cache", "model": settings.name, "prompts_per_kind": args.prompts,
        "tokens": args.tokens, "max_abs_gap": round(float(gap.max()), 6), "mean_abs_gap": round(float(gap.mean()), 6),
        "python_score": {k: round(statistics.fmean(v), 4) for k, v in py_score.items()},
        "judge_accuracy": round(statistics.fmean(correct), 4) if correct else None,
        "judged": len(correct), "empty_continuations": 2 * args.prompts - len(correct),
        "machine": {**machine(), "load_average": [round(x, 2) for x in os.getloadavg()]},
    }))


if __name__ == "__main__":
    main()
