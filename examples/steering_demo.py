"""An offline model to show steering on: cortex's char LM trained on two kinds of text found on any machine
with Python, a "kind" lens pack trained on its activations, and an external text classifier.

This is an example built over library calls, not part of the ``cortex`` package (which ships no demo
corpus): ``benchmarks/steering_effect.py``, ``benchmarks/lens_monitor_cache.py`` and the steering tests import
it from this file. Run it to build the demo into a registry, then steer it with ``cortex lens monitor``::

    python examples/steering_demo.py [--home DIR] [--steps 1200] [--chars-per-kind 150000]
    cortex lens monitor --model kind-demo --lens lens-kind-demo "import os" --steer prose=0.5

No pretrained causal LM can be downloaded here, so :func:`build_demo` makes one:

- ``python`` documents: the standard library's top-level modules (``sysconfig`` stdlib path), parsed with
  :mod:`ast`, docstrings dropped and unparsed (so no comments or prose remain), cut at line boundaries;
- ``prose`` documents: English paragraphs of the Python reference documentation that CPython ships as
  ``pydoc_data.topics`` (paragraphs that are mostly letters, no code samples), ASCII-normalized;
- a fresh ``char_lm`` registered as ``<name>-base``, trained with :func:`cortex.training.finetune.finetune`
  on both kinds (registered as ``<name>``);
- a concept pack ``<name>-kinds`` (``python`` and ``prose``, each the other's ``opposite``), a lens pack
  ``lens-<name>`` of linear probes trained on per-token activations of every layer (primary layer: best
  held-out F1), with mean-difference concept vectors of every layer stored in it.

:class:`CharNgramClassifier` is the external judge of generated text: multinomial naive Bayes over
character 1–4-grams, trained on the same documents, never looking at the model.
"""

from __future__ import annotations

import ast
import glob
import json
import math
import os
import random
import re
import sysconfig
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cortex.errors import ConfigError, DataError

KINDS = ("prose", "python")
DEFINITIONS = {
    "python": "Python source code: function and class definitions, imports, assignments, calls, loops, "
              "conditionals and return statements, written with indentation, parentheses and operators.",
    "prose": "English prose: plain sentences and paragraphs of natural language that explain and describe "
             "things in words, with ordinary punctuation.",
}
_ASCII = {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
          "\u2026": "...", "\u00a0": " "}


def to_ascii(text: str) -> str:
    """Typographic quotes and dashes to ASCII, accents stripped, anything else non-ASCII dropped."""
    text = "".join(_ASCII.get(ch, ch) for ch in text)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


class _StripDocstrings(ast.NodeTransformer):
    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        body = getattr(node, "body", None)
        if isinstance(body, list):
            kept = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                                            and isinstance(n.value.value, str))]
            node.body = kept or [ast.Pass()]
        return node


def _chunks(lines: Sequence[str], size: int, joiner: str) -> list[str]:
    out, cur = [], []
    for line in lines:
        cur.append(line)
        if sum(len(x) + 1 for x in cur) >= size:
            out.append(joiner.join(cur))
            cur = []
    return out


def python_documents(n_chars: int, doc_chars: int = 400, seed: int = 0) -> list[str]:
    """About ``n_chars`` of standard-library code without docstrings or comments, in ~``doc_chars`` pieces."""
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    random.Random(seed).shuffle(files)
    docs: list[str] = []
    total = 0
    for f in files:
        try:
            tree = ast.parse(Path(f).read_text(encoding="utf-8"))
            code = ast.unparse(_StripDocstrings().visit(tree))
        except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
            continue
        lines = [ln for ln in code.splitlines() if ln.strip() and len(ln) <= 88 and ln.isascii()]
        for d in _chunks(lines, doc_chars, "\n"):
            docs.append(d)
            total += len(d)
            if total >= n_chars:
                return docs
    if not docs:
        raise DataError("No Python source found in the standard library folder; cannot build the demo corpus.")
    return docs


def prose_documents(n_chars: int, doc_chars: int = 400, seed: int = 0) -> list[str]:
    """About ``n_chars`` of English paragraphs from CPython's ``pydoc_data.topics``, in ~``doc_chars`` pieces."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:
        raise DataError("This Python has no pydoc_data (the reference documentation); cannot build prose.") from e
    paragraphs = []
    for key in sorted(topics):
        for p in re.split(r"\n\s*\n", topics[key]):
            p = to_ascii(re.sub(r"\s+", " ", p)).strip()
            letters = sum(c.isalpha() or c in " ,.;:'-()" for c in p)
            if len(p) >= 120 and letters / len(p) > 0.95 and ">>>" not in p and "::" not in p:
                paragraphs.append(p)
    random.Random(seed).shuffle(paragraphs)
    sentences = [s for p in paragraphs for s in re.split(r"(?<=[.!?]) ", p)]
    docs = _chunks(sentences, doc_chars, " ")
    out, total = [], 0
    for d in docs:
        out.append(d)
        total += len(d)
        if total >= n_chars:
            break
    if not out:
        raise DataError("pydoc_data.topics has no prose paragraphs; cannot build the demo corpus.")
    return out


def kind_corpus(n_chars: int, doc_chars: int = 400, seed: int = 0) -> dict[str, list[str]]:
    """``{"prose": [...], "python": [...]}``, about ``n_chars`` characters of each."""
    return {"prose": prose_documents(n_chars, doc_chars, seed), "python": python_documents(n_chars, doc_chars, seed)}


# ------------------------------------------------------------------------------------- external judge
class CharNgramClassifier:
    """Multinomial naive Bayes over character n-grams (``n`` in ``orders``), Laplace smoothed.

    ``fit({label: [texts]})`` then ``proba(text) → {label: p}``. Independent of any model's activations.
    """

    def __init__(self, orders: Sequence[int] = (1, 2, 3, 4), alpha: float = 0.5):
        if not orders or min(orders) < 1:
            raise ConfigError(f"orders={list(orders)} must be positive n-gram lengths.")
        if not alpha > 0:
            raise ConfigError(f"alpha={alpha} must be positive (Laplace smoothing).")
        self.orders = tuple(orders)
        self.alpha = alpha
        self.counts: dict[str, Counter] = {}
        self.totals: dict[str, int] = {}
        self.priors: dict[str, float] = {}
        self.vocab: set[str] = set()

    def grams(self, text: str) -> list[str]:
        return [text[i:i + n] for n in self.orders for i in range(len(text) - n + 1)]

    def fit(self, docs: dict[str, Sequence[str]]) -> "CharNgramClassifier":
        if len(docs) < 2:
            raise DataError("The n-gram classifier needs texts of at least two labels.")
        n_docs = sum(len(v) for v in docs.values())
        for label, texts in docs.items():
            c = Counter(g for t in texts for g in self.grams(t))
            self.counts[label], self.totals[label] = c, sum(c.values())
            self.priors[label] = len(texts) / n_docs
            self.vocab.update(c)
        return self

    def log_likelihoods(self, text: str) -> dict[str, float]:
        if not self.counts:
            raise DataError("Fit the n-gram classifier before scoring texts.")
        grams = Counter(self.grams(text))
        V = len(self.vocab) + 1
        out = {}
        for label, c in self.counts.items():
            denom = math.log(self.totals[label] + self.alpha * V)
            out[label] = math.log(self.priors[label]) + sum(k * (math.log(c.get(g, 0) + self.alpha) - denom)
                                                            for g, k in grams.items())
        return out

    def proba(self, text: str) -> dict[str, float]:
        """Posterior over labels, normalized by the text's n-gram count so long texts are not overconfident."""
        ll = self.log_likelihoods(text)
        n = max(1, len(self.grams(text)))
        scaled = {k: v / n * 8 for k, v in ll.items()}   # ~ a few characters' worth of evidence per text
        m = max(scaled.values())
        z = sum(math.exp(v - m) for v in scaled.values())
        return {k: math.exp(v - m) / z for k, v in scaled.items()}

    def predict(self, text: str) -> str:
        ll = self.log_likelihoods(text)
        return max(ll, key=ll.__getitem__)


# ---------------------------------------------------------------------------------------- the demo
@dataclass
class DemoSettings:
    """Sizes of the demo corpus, model, training and probes."""

    name: str = "kind-demo"
    chars_per_kind: int = 150_000
    doc_chars: int = 400
    heldout_fraction: float = 0.1
    hidden_size: int = 64
    layers: int = 4
    heads: int = 4
    steps: int = 1200
    batch_size: int = 8
    block_size: int = 256          # also the model's longest sequence: positions beyond it would be untrained
    lr: float = 4e-3
    probe_docs: int = 160          # documents per kind whose token states train the probes
    probe_chars: int = 160         # characters read per document
    warmup: int = 12               # first positions of a document are not labelled (too little context)
    probe_steps: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        for f in ("chars_per_kind", "doc_chars", "hidden_size", "layers", "heads", "steps", "batch_size",
                  "block_size", "probe_docs", "probe_chars", "probe_steps"):
            if getattr(self, f) < 1:
                raise ConfigError(f"{f}={getattr(self, f)} must be at least 1.")
        if not 0 < self.heldout_fraction < 0.5:
            raise ConfigError(f"heldout_fraction={self.heldout_fraction} must be in (0, 0.5).")
        if self.warmup >= self.probe_chars:
            raise ConfigError(f"warmup={self.warmup} must be below probe_chars={self.probe_chars}.")
        if self.probe_chars > self.block_size:
            raise ConfigError(f"probe_chars={self.probe_chars} must not exceed block_size={self.block_size}, the "
                              "longest sequence the model is trained on.")


@dataclass
class DemoArtifacts:
    """Registry names the demo produced, its held-out documents and training figures."""

    model: str
    lens_pack: str
    concept_pack: str
    heldout: dict[str, list[str]]
    train: dict[str, list[str]]
    metrics: dict[str, Any] = field(default_factory=dict)


def demo_corpus(settings: DemoSettings) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(train, heldout)`` documents of each kind; deterministic for given settings."""
    train, heldout = {}, {}
    for k, docs in kind_corpus(settings.chars_per_kind, settings.doc_chars, settings.seed).items():
        n_held = max(2, int(len(docs) * settings.heldout_fraction))
        heldout[k], train[k] = docs[:n_held], docs[n_held:]
    return train, heldout


@torch.inference_mode()
def token_states(loaded: Any, docs: Sequence[str], max_chars: int,
                 layers: Sequence[int]) -> list[dict[int, torch.Tensor]]:
    """Per-document hidden states ``{layer: (T_doc, d)}`` float32 of the first ``max_chars`` characters.

    One document per forward pass and no attention mask: nothing is padded, so a mask would carry nothing.
    """
    from cortex.lenses.capture import ActivationCapture, forward_module

    device = next(loaded.model.parameters()).device
    out = []
    for d in docs:
        ids = loaded.tokenizer(d[:max_chars], return_tensors="pt")["input_ids"].to(device)
        with ActivationCapture(loaded.layers(), layers, stop_after_last=True) as cap:
            cap.run(lambda: forward_module(loaded.model)(input_ids=ids))
            out.append({l: cap.tokens(l)[0].float().cpu() for l in layers})
    return out


def _fit_linear(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression on standardized ``x (N, d)``, balanced classes: ``(w (d,), b ())``."""
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(x.shape[1], generator=g) * 0.01).requires_grad_(True)
    b = torch.zeros((), requires_grad=True)
    pos = float(y.mean())
    weights = torch.where(y > 0.5, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6)) / len(y)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        z = x @ w + b
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none") * weights).sum()
        loss = loss + 1e-3 * w.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def _f1(pred: torch.Tensor, y: torch.Tensor) -> float:
    tp = float((pred & y).sum())
    fp, fn = float((pred & ~y).sum()), float((~pred & y).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def build_demo(settings: DemoSettings | None = None, registry: Any = None,
               progress: Callable[[str], None] | None = None) -> DemoArtifacts:
    """Build (or rebuild) the demo model, concept pack and lens pack in ``registry`` (see the module docstring)."""
    from cortex.hub.loading import load_model
    from cortex.hub.registry import Registry
    from cortex.steering.vectors import attach_vectors

    s = settings or DemoSettings()
    reg = registry or Registry()
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    torch.manual_seed(s.seed)

    say("collecting python and prose documents")
    train, heldout = demo_corpus(s)
    entry = _train_demo_model(s, reg, train, say)
    say("registering the concept pack")
    cpack_name = _register_kinds_pack(s, reg, heldout)
    say("reading token states and training the kind probes")
    loaded = load_model(entry.name, registry=reg)
    layers = list(range(len(loaded.layers())))
    doc_states = {k: token_states(loaded, train[k][:s.probe_docs], s.probe_chars, layers) for k in KINDS}
    held_doc_states = {k: token_states(loaded, heldout[k], s.probe_chars, layers) for k in KINDS}
    per_layer, f1 = _kind_probes(s, layers, _stacked(s, layers, doc_states), _stacked(s, layers, held_doc_states))
    primary = {k: max(layers, key=lambda l: (f1[k][l], l)) for k in KINDS}  # ties: the deeper layer, as in lens training
    pack_entry = _register_demo_lens_pack(s, reg, loaded, cpack_name, layers, per_layer, f1, primary)
    say("extracting concept vectors")
    attach_vectors(pack_entry.name, _kind_vectors(s, layers, doc_states), registry=reg)

    final_loss = entry.extra["finetune"]["final_loss"]
    return DemoArtifacts(
        model=entry.name, lens_pack=pack_entry.name, concept_pack=cpack_name, heldout=heldout, train=train,
        metrics={"final_loss": round(final_loss, 4), "first_loss": round(entry.extra["finetune"]["first_loss"], 4),
                 "primary": primary, "heldout_token_f1": {k: f1[k][primary[k]] for k in KINDS},
                 "docs": {k: len(train[k]) + len(heldout[k]) for k in KINDS},
                 "seconds": round(time.perf_counter() - t0, 2),
                 "settings": asdict(s)},
    )


def _train_demo_model(s: DemoSettings, reg: Any, train: dict[str, list[str]], say: Callable[[str], None]) -> Any:
    """Stage 1: a fresh char LM registered as ``{name}-base``, fine-tuned on both kinds into ``name``."""
    from cortex.models.selection import ModelSelection, build_model
    from cortex.training.finetune import finetune
    from cortex.training.settings import FinetuneSettings

    say("creating the base char LM")
    model, tok, family = build_model(ModelSelection(char_lm={
        "hidden_size": s.hidden_size, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
        # learned positions: only those inside a training block ever get trained, so the model stops there
        "max_position_embeddings": s.block_size + 1}))
    base = f"{s.name}-base"
    with reg.stage() as tmp:
        family.save(model, tok, tmp)
        reg.register(tmp, name=base, kind="model", source="custom", family="char_lm", model_id="cortex/char_lm",
                     license="apache-2.0", on_conflict="replace",
                     extra={"params": sum(p.numel() for p in model.parameters()), "demo": "steering"})

    say(f"training {s.name} for {s.steps} steps")
    docs = [{"text": d} for k in KINDS for d in train[k]]
    random.Random(s.seed).shuffle(docs)
    with tempfile.TemporaryDirectory() as td:
        data = Path(td) / "kinds.jsonl"
        data.write_text("\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
        if reg.exists(s.name):
            reg.remove(s.name, force=True)
        return finetune(base, data, name=s.name, registry=reg, settings=FinetuneSettings(
            max_steps=s.steps, lr=s.lr, batch_size=s.batch_size, block_size=s.block_size,
            save_every=max(s.steps, 1), seed=s.seed, warmup_steps=min(20, s.steps // 10)))


def _register_kinds_pack(s: DemoSettings, reg: Any, heldout: dict[str, list[str]]) -> str:
    """Stage 2: the two-concept pack (python, prose), each the other's opposite; returns its name."""
    from cortex.lenses.concepts import Concept, ConceptPack, write_concept_pack

    cpack_name = f"{s.name}-kinds"
    cpack = ConceptPack(name=cpack_name, version="1", description="Kinds of text for the steering demo",
                        source="examples/steering_demo.py", license="PSF-2.0")
    for k in KINDS:
        other = [o for o in KINDS if o != k][0]
        cpack.concepts[k] = Concept(term=k, definition=DEFINITIONS[k], opposites=[other],
                                    positive_examples=[d[:160] for d in heldout[k][:3]],
                                    negative_examples=[d[:160] for d in heldout[other][:3]])
    cpack.validate()
    with reg.stage() as tmp:
        write_concept_pack(cpack, tmp)
        reg.register(tmp, name=cpack_name, kind="concept_pack", source="custom", on_conflict="replace",
                     revision="1", extra={"pack_name": cpack_name, "pack_version": "1", "n_concepts": 2})
    return cpack_name


def _stacked(s: DemoSettings, layers: list[int],
             per_kind: dict[str, list[dict[int, torch.Tensor]]]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Labelled token states ``{layer: (N, d)}`` and labels ``(N,)`` (1 = python), past each document's warm-up."""
    x = {l: torch.cat([st[l][s.warmup:] for k in KINDS for st in per_kind[k]]) for l in layers}
    y = torch.cat([torch.full((max(0, st[layers[0]].shape[0] - s.warmup),), float(k == "python"))
                   for k in KINDS for st in per_kind[k]])
    return x, y


def _kind_probes(s: DemoSettings, layers: list[int], train: tuple, held: tuple) -> tuple[dict, dict]:
    """Stage 3: one linear probe per kind and layer on the training documents' token states, scored by
    token F1 on the held-out documents. Returns ``{layer: LayerProbes}`` and ``{kind: {layer: F1}}``."""
    from cortex.lenses.lens_pack import LayerProbes
    from cortex.lenses.probes import LinearProbe, stack_tensors

    (states, y), (held_states, y_held) = train, held
    per_layer: dict[int, Any] = {}
    f1: dict[str, dict[int, float]] = {k: {} for k in KINDS}
    for l in layers:
        x, xh = states[l], held_states[l]
        mean, std = x.mean(0), x.std(0).clamp_min(1e-4)
        probes = []
        for k in KINDS:
            target = y if k == "python" else 1 - y
            w, b = _fit_linear((x - mean) / std, target, s.probe_steps, s.seed + l)
            probe = LinearProbe(x.shape[1])
            probe.linear.weight.data.copy_(w.view(1, -1))
            probe.linear.bias.data.fill_(float(b))
            probe.set_normalizer(mean, std).eval()
            with torch.no_grad():
                pred = probe(xh) > 0
            truth = (y_held if k == "python" else 1 - y_held) > 0.5
            f1[k][l] = round(_f1(pred, truth), 4)
            probes.append(probe.to_tensors())
        per_layer[l] = LayerProbes(layer=l, kind="linear", order=list(KINDS), tensors=stack_tensors(probes),
                                   input_mean=mean, input_std=std,
                                   results={k: {"heldout_token_f1": f1[k][l]} for k in KINDS})
    return per_layer, f1


def _register_demo_lens_pack(s: DemoSettings, reg: Any, loaded: Any, cpack_name: str, layers: list[int],
                             per_layer: dict, f1: dict, primary: dict[str, int]) -> Any:
    """Stage 4: the lens pack of the kind probes, each kind's primary layer marked."""
    from cortex.lenses.lens_pack import FORMAT, FORMAT_VERSION, LensPack, model_identity, register_lens_pack

    for k, l in primary.items():
        per_layer[l].results[k]["primary"] = True
    name, revision = model_identity(loaded)
    info = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": f"lens-{s.name}",
        "model": {"name": name, "revision": revision},
        "concept_pack": {"name": cpack_name, "version": "1"}, "hidden_size": s.hidden_size, "layers": layers,
        "concepts": primary, "probe": {"kind": "linear", "layer_norm": False},
        "training": {"source": "examples/steering_demo.py", "labels": "per-token kind", "steps": s.probe_steps,
                     "heldout_token_f1": {k: {str(l): v for l, v in f1[k].items()} for k in KINDS}},
    }
    return register_lens_pack(LensPack(info, per_layer), name=f"lens-{s.name}", registry=reg,
                              extra={"demo": "steering"})


def _kind_vectors(s: DemoSettings, layers: list[int], doc_states: dict) -> Any:
    """Stage 5: concept vectors per kind and layer, the mean difference of document-level activations
    (the mean over each training document's labelled positions)."""
    from cortex.steering.vectors import VectorSet, mean_difference

    vs = VectorSet(opposites={k: [o for o in KINDS if o != k] for k in KINDS})
    pooled = {k: {l: torch.stack([st[l][s.warmup:].mean(0) for st in doc_states[k]]) for l in layers} for k in KINDS}
    for l in layers:
        for k in KINDS:
            other = [o for o in KINDS if o != k][0]
            vs.add(mean_difference(k, l, pooled[k][l], pooled[other][l], paired=False))
    return vs


def main(argv: Sequence[str] | None = None) -> int:
    """Build the demo into a registry (``--home``, default the user's registry) and print its figures as JSON."""
    import argparse

    from cortex.hub.registry import Registry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=None, help="Registry home to build into (default: CORTEX_HOME or ~/.cortex).")
    ap.add_argument("--name", default=DemoSettings.name, help="Registry name of the demo model.")
    ap.add_argument("--steps", type=int, default=DemoSettings.steps, help="Training steps of the char LM.")
    ap.add_argument("--chars-per-kind", type=int, default=DemoSettings.chars_per_kind,
                    help="Characters of each kind in the corpus.")
    ap.add_argument("--seed", type=int, default=DemoSettings.seed)
    args = ap.parse_args(argv)
    settings = DemoSettings(name=args.name, steps=args.steps, chars_per_kind=args.chars_per_kind, seed=args.seed)
    reg = Registry(args.home)
    art = build_demo(settings, registry=reg, progress=lambda m: print(f"[demo] {m}", flush=True))
    print(json.dumps({"model": art.model, "lens_pack": art.lens_pack, "concept_pack": art.concept_pack,
                      **{k: v for k, v in art.metrics.items() if k != "settings"}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
