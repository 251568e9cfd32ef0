"""The routing model: a NeuralTree with a text root, plus the context root of :mod:`.context`.

Tree layout (all node names fixed, masters indexed in config order ``0..C-1``)::

    roots     text      hf encoder (default: the packaged MiniLM), mean-pooled over ``text_layers``, frozen,
                        truncated to ``max_text_tokens``
              lexical   hashed word-piece uni/bigrams of the whole text (:mod:`.lexical`), added at the trunk
              context   numeric worker/task features (:mod:`.context`), added at the trunk
    trunk     sum       out_dim = hidden_dim
    branches  route     mlp → pooled (E, B, branch_dim)       feeds the master classifier
              outcome   mlp → pooled (E, B, branch_dim)       feeds every outcome head
    leaves    master    classifier, C classes                 which master should take the task
              topic     classifier, T classes (with ``topics``) finer labels, each owned by one master:
                                                              the master's probability is its topics' sum
              success_i classifier, 2 classes (one per master) P(success | routed to master i)
              duration  regressor, out_dim C                  log(minutes) per master → log-normal
              tokens    regressor, out_dim C                  log1p(tokens) per master

Outcome leaves exist only for outcomes the training data has. An outcome of a task is observed
for the master that handled it, so each row trains one column (NaN / -1 elsewhere, which the tree's
losses skip). The text root's pooled features can be computed once and passed as
``text_features`` (see :mod:`.embedding_cache`); with ``input_ids`` the root runs inside forward.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel

from cortex.errors import ConfigError, ModelInputError
from cortex.models.neural_tree import (
    NeuralTreeConfig,
    NeuralTreeModel,
    NeuralTreeOutput,
    RootOutput,
)
from cortex.models.neural_tree.tokenizers import root_tokenizer, tokenizer_dir
from cortex.routing.context import ContextEncoder, context_feature_names
from cortex.routing.lexical import LexicalBags, LexicalRoot, hash_bags
from cortex.routing.masters import check_master_names

TEXT_ROOT = "text"
OUTCOMES = ("success", "duration", "tokens")
HEAD_LAYOUTS = ("shared_hidden", "branch_mlp")
DEFAULT_TEXT_DEPTH = 3  # encoder layers a new router runs (MiniLM has 6): half the cost, -0.005 macro-F1 on tuning


def default_text_source() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (the default text root), as a string: it is stored in the
    router's JSON config."""
    from cortex.resources import minilm_dir

    return str(minilm_dir())


def success_leaf(i: int) -> str:
    return f"success_{i}"


def _text_problems(text_layers: list[int] | None, lexical_buckets, lexical_dim, text_depth, head_layout) -> list[str]:
    """What is wrong with RouterConfig's text-root, lexical-root and head-layout fields."""
    problems = []
    if text_layers is not None and (not text_layers or any(isinstance(v, bool) or not isinstance(v, int)
                                                            for v in text_layers)):
        problems.append(f"RouterConfig.text_layers={text_layers!r} must be a non-empty list of layer indices")
    if isinstance(lexical_buckets, bool) or not isinstance(lexical_buckets, int) or lexical_buckets < 0:
        problems.append(f"RouterConfig.lexical_buckets={lexical_buckets!r} must be an integer >= 0 (0: no lexical root)")
    if isinstance(lexical_dim, bool) or not isinstance(lexical_dim, int) or lexical_dim < 1:
        problems.append(f"RouterConfig.lexical_dim={lexical_dim!r} must be an integer >= 1")
    if isinstance(text_depth, bool) or not isinstance(text_depth, int) or text_depth < 0:
        problems.append(f"RouterConfig.text_depth={text_depth!r} must be an integer >= 0 (0: every layer)")
    if head_layout not in HEAD_LAYOUTS:
        problems.append(f"RouterConfig.head_layout={head_layout!r} must be one of {', '.join(HEAD_LAYOUTS)}")
    return problems


def _topic_problems(topics: list[dict[str, str]], masters: set) -> list[str]:
    """What is wrong with RouterConfig.topics (each needs a name and an owning master; names unique)."""
    problems = []
    bad_topics = [t for t in topics if t.get("master") not in masters or not t.get("name")]
    if bad_topics:
        problems.append(f"RouterConfig.topics {bad_topics[:3]} need a 'name' and a 'master' among the masters")
    if len({t.get("name") for t in topics}) != len(topics):
        problems.append("RouterConfig.topics names must be unique")
    return problems


class RouterConfig(PreTrainedConfig):
    """Architecture of a router: its masters, its tree, its context features and calibration.

    Args:
        masters: ``[{"name": ..., "description": ...}, ...]`` (at least 2, unique names).
        text_source: registry name or folder of the text encoder (used when ``tree`` is not given).
        outcomes: which outcome heads to build, among ``success``, ``duration``, ``tokens``.
        hidden_dim: trunk width. branch_dim: width of the ``route`` and ``outcome`` branches.
        num_layers: hidden layers of each branch MLP. dropout: branch dropout while training.
        ensemble_size: members per leaf (logits are averaged over members).
        freeze_text: keep the text encoder fixed (its features can then be cached).
        max_text_tokens: longest tokenized text; longer ones are truncated.
        context_hidden: hidden width of the context encoder.
        tree: the full NeuralTree config dict (filled in from the fields above when ``None``).
        temperature_master / temperature_success: temperature-scaling constants fitted on held-out data.
        observed: outcome → per-master flags, True where training saw that outcome for that master.
        text_layers: hidden layers of the text encoder whose mean-pooled states are concatenated
            (``[-1]``: the last only; ``None``: the last two, or all of a shallower encoder's); several
            layers are mixed by a linear map before the trunk.
        lexical_buckets: hash buckets of the lexical root (0: no lexical root). lexical_dim: its width.
        topics: ``[{"name": ..., "master": ...}, ...]`` finer labels (e.g. subjects), each owned by one
            master; with them the master probabilities are sums of a topic classifier's.

        readout: a linear read-out from the standardized text features to the topics (or masters), fitted
            after the tree by a convex solver (:func:`~cortex.routing.training.fit_readout`); default on for new
            routers, off for a saved config without the field. readout_weight: its share of the master
            probabilities, ``(1 - w) p_tree + w p_readout`` (chosen on the validation split; 0: the tree alone).
            Why: on the routing data a multinomial logistic regression on the pooled MiniLM features beat every
            trained head (2-3 macro-F1 points on the tuning split), and a convex fit has no seed or stopping
            noise.
        text_depth: run at most the text encoder's first ``text_depth`` layers (0: all of them); the
            dropped layers are removed from the backbone, so serving, caching and saving see the
            shorter encoder. ``text_layers`` then index its hidden states.
        head_layout: ``shared_hidden`` (default for new routers): the trunk sum is the one hidden layer (GELU,
            dropout) and every branch is a single linear map, so each leaf is a linear read-out of it;
            ``branch_mlp``: each branch is an MLP of ``num_layers`` hidden layers of width ``branch_dim``
            (the layout before issue 16; a saved config without this field is read as ``branch_mlp``).
            Why: on the shared routing data, stacks of linear maps (text mix, trunk projection, branch
            layers, leaf) trained unstably with Adam and lost 3-5 macro-F1 points to one hidden layer.

    Defaults (64 text tokens, the first three MiniLM layers pooled over the last two, lexical root, topics when
    the data has them, the shared hidden layer, the convex read-out) were chosen on a validation split carved
    from the training part of the shared routing data (benchmarks/router_eval.py).
    """

    model_type = "cortex_router"

    def __init__(
        self,
        masters: list[dict[str, str]] | None = None,
        text_source: str | None = None,
        outcomes: list[str] | None = None,
        hidden_dim: int = 384,
        branch_dim: int = 128,
        num_layers: int = 1,
        dropout: float = 0.3,
        ensemble_size: int = 1,
        freeze_text: bool = True,
        max_text_tokens: int = 64,
        context_hidden: int = 32,
        tree: dict[str, Any] | None = None,
        temperature_master: float = 1.0,
        temperature_success: float = 1.0,
        observed: dict[str, list[bool]] | None = None,
        text_layers: list[int] | None = None,
        lexical_buckets: int = 1 << 17,
        lexical_dim: int = 64,
        topics: list[dict[str, str]] | None = None,
        head_layout: str | None = None,
        text_depth: int | None = None,
        readout: bool | None = None,
        readout_weight: float = 0.0,
        **kwargs,
    ):
        masters = [dict(m) if isinstance(m, dict) else {"name": str(m), "description": ""} for m in (masters or [])]
        problems = []
        try:
            check_master_names([m.get("name") for m in masters], "RouterConfig.masters")
        except Exception as e:  # collect with the rest
            problems.append(str(e))
        outcomes = list(OUTCOMES if outcomes is None else outcomes)
        bad = [o for o in outcomes if o not in OUTCOMES]
        if bad:
            problems.append(f"RouterConfig.outcomes has {bad}; choose among {', '.join(OUTCOMES)}")
        for name, value in (("hidden_dim", hidden_dim), ("branch_dim", branch_dim), ("ensemble_size", ensemble_size),
                            ("max_text_tokens", max_text_tokens), ("context_hidden", context_hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"RouterConfig.{name}={value!r} must be an integer >= 1")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            problems.append(f"RouterConfig.num_layers={num_layers!r} must be an integer >= 0")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            problems.append(f"RouterConfig.dropout={dropout!r} must be in [0, 1)")
        for name, value in (("temperature_master", temperature_master), ("temperature_success", temperature_success)):
            if not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
                problems.append(f"RouterConfig.{name}={value!r} must be a finite number > 0")
        text_layers = None if text_layers is None else list(text_layers)
        topics = [dict(t) for t in (topics or [])]
        if head_layout is None:  # a saved config without the field predates it: its branches are MLPs
            head_layout = "branch_mlp" if tree is not None else "shared_hidden"
        if text_depth is None:  # likewise: a saved config without it ran every layer of its encoder
            text_depth = 0 if tree is not None else DEFAULT_TEXT_DEPTH
        problems += _text_problems(text_layers, lexical_buckets, lexical_dim, text_depth, head_layout)
        problems += _topic_problems(topics, {m.get("name") for m in masters})
        if readout is None:  # a saved config without the field predates the read-out
            readout = tree is None
        if isinstance(readout_weight, bool) or not isinstance(readout_weight, (int, float)) or not 0 <= readout_weight <= 1:
            problems.append(f"RouterConfig.readout_weight={readout_weight!r} must be in [0, 1]")
        if problems:
            raise ConfigError("; ".join(problems) + ".")
        self.head_layout, self.text_depth = head_layout, text_depth
        self.text_layers, self.lexical_buckets, self.lexical_dim, self.topics = text_layers, lexical_buckets, lexical_dim, topics
        self.masters, self.text_source, self.outcomes = masters, text_source, outcomes
        self.hidden_dim, self.branch_dim, self.num_layers = hidden_dim, branch_dim, num_layers
        self.dropout, self.ensemble_size, self.freeze_text = float(dropout), ensemble_size, bool(freeze_text)
        self.readout, self.readout_weight = bool(readout), float(readout_weight)
        self.max_text_tokens, self.context_hidden = max_text_tokens, context_hidden
        self.temperature_master, self.temperature_success = float(temperature_master), float(temperature_success)
        C = len(masters)
        self.observed = {o: list((observed or {}).get(o, [True] * C)) for o in outcomes}
        self.context_features = context_feature_names(self.master_names)
        self.tree = tree if tree is not None else self._tree_dict(text_source or default_text_source())
        super().__init__(**kwargs)

    @property
    def master_names(self) -> list[str]:
        return [m["name"] for m in self.masters]

    def _tree_dict(self, source: str) -> dict[str, Any]:
        C, E = len(self.masters), self.ensemble_size
        branch = {"kind": "mlp", "out_dim": self.branch_dim, "hidden_dim": self.branch_dim,
                  "num_layers": self.num_layers, "dropout": self.dropout, "pooling": "mean"}
        route = dict(branch)
        if self.head_layout == "shared_hidden":  # linear branches over the trunk's one hidden layer
            branch = {**branch, "num_layers": 0, "dropout": 0.0}
            # the route branch maps straight to the classes, so the class read-out stays (nearly) one linear map
            width = len(self.topics) or C
            route = {**branch, "out_dim": width, "hidden_dim": width}
        leaves: dict[str, dict] = {"master": {"kind": "classifier", "branch": "route", "num_classes": C, "ensemble_size": E}}
        if self.topics:  # the master leaf's logits are then derived from the topic leaf's
            leaves = {"topic": {"kind": "classifier", "branch": "route", "num_classes": len(self.topics), "ensemble_size": E}}
        if "success" in self.outcomes:
            for i in range(C):
                leaves[success_leaf(i)] = {"kind": "classifier", "branch": "outcome", "num_classes": 2, "ensemble_size": E}
        for name in ("duration", "tokens"):
            if name in self.outcomes:
                leaves[name] = {"kind": "regressor", "branch": "outcome", "out_dim": C, "ensemble_size": E}
        cfg = NeuralTreeConfig(
            roots={TEXT_ROOT: {"kind": "hf", "source": source, "pooling": "mean", "freeze": self.freeze_text,
                               "max_len": self.max_text_tokens}},
            trunk={"kind": "sum", "out_dim": self.hidden_dim},
            branches={"route": route, "outcome": dict(branch)},
            leaves=leaves,
        )
        return {k: copy.deepcopy(getattr(cfg, k)) for k in ("roots", "trunk", "branches", "leaves", "initializer_range")}

    def tree_config(self) -> NeuralTreeConfig:
        return NeuralTreeConfig(**copy.deepcopy(self.tree))


@dataclass
class RouterOutput:
    """Model outputs for a batch (``E`` ensemble members, ``B`` tasks, ``C`` masters).

    Attributes:
        master_logits: ``(E, B, C)``.
        success_logits: ``(E, B, C)`` log-odds of success per master, or ``None``.
        duration_loc / duration_scale: ``(E, B, C)`` mean and std of log(minutes), or ``None``.
        tokens_loc / tokens_scale: ``(E, B, C)`` mean and std of log1p(tokens), or ``None``.
        tree: the tree's own output (for :meth:`NeuralTreeModel.leaf_loss`).
    """

    master_logits: torch.Tensor
    success_logits: torch.Tensor | None
    duration_loc: torch.Tensor | None
    duration_scale: torch.Tensor | None
    tokens_loc: torch.Tensor | None
    tokens_scale: torch.Tensor | None
    tree: NeuralTreeOutput


@dataclass
class RouterPredictions:
    """Calibrated predictions as numpy arrays, ``(B, C)`` each (``None`` for an outcome never trained;
    NaN in the columns of masters whose outcome was never observed)."""

    probs: np.ndarray
    success: np.ndarray | None
    minutes: np.ndarray | None
    tokens: np.ndarray | None


def special_tokens(tokenizer) -> tuple[list[int], list[int], int]:
    """``(prefix, suffix, pad_id)``: the special ids the tokenizer puts around one sequence (``[CLS]`` /
    ``[SEP]`` for BERT-style tokenizers), found by tokenizing a one-word text with and without them."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    at = next(i for i in range(len(full)) if full[i:i + len(bare)] == bare)
    return list(full[:at]), list(full[at + len(bare):]), int(tokenizer.pad_token_id or 0)


def encoder_batch(ids: Sequence[Sequence[int]], max_len: int, special: tuple[list[int], list[int], int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The special tokens around the first ids of each row, ``max_len`` in all (what the tokenizer's
    own truncation keeps of one sequence), right-padded: ``(input_ids, attention_mask)``."""
    prefix, suffix, pad = special
    keep = max(max_len - len(prefix) - len(suffix), 0)
    rows = [prefix + list(r[:keep]) + suffix for r in ids]
    T = max((len(r) for r in rows), default=0)
    input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return input_ids, mask


def truncate_encoder(backbone: torch.nn.Module, depth: int) -> None:
    """Keep only the first ``depth`` transformer layers of an HF encoder (in place; an encoder with at
    most ``depth`` layers is left whole).

    The layer stack is the backbone's ``ModuleList`` of ``config.num_hidden_layers`` blocks; hidden
    states ``0..depth`` are then exactly those of the full encoder, at a fraction of its cost.
    """
    n = int(getattr(backbone.config, "num_hidden_layers", 0))
    if depth >= n:
        return
    stack = next((m for m in backbone.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n), None)
    if stack is None:
        raise ConfigError(f"RouterConfig.text_depth={depth} cannot shorten this text encoder (no list of its {n} "
                          "layers found); set text_depth=0 to run every layer.")
    del stack[depth:]
    backbone.config.num_hidden_layers = depth


def pool_layers(backbone: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                layers: list[int]) -> torch.Tensor:
    """``(B, H * len(layers))``: masked mean over real tokens of each chosen hidden layer, concatenated."""
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True)
    n = len(out.hidden_states)
    if any(not -n <= i < n for i in layers):
        raise ConfigError(f"RouterConfig.text_layers={layers} names layers the text encoder lacks; it has hidden "
                          f"states 0..{n - 1} (embeddings, then one per layer; -1 is the last).")
    m = attention_mask[..., None].to(out.hidden_states[-1].dtype)
    denom = m.sum(1).clamp(min=1.0)
    return torch.cat([(out.hidden_states[i] * m).sum(1) / denom for i in layers], dim=-1)


def pooled_root_output(features: torch.Tensor) -> RootOutput:
    """A :class:`RootOutput` for precomputed pooled text features ``(B, H)`` (no tokens attached)."""
    B = features.shape[0]
    dev = features.device
    return RootOutput(
        features=features[:, None, :],
        attention_mask=torch.ones(B, 1, dtype=torch.bool, device=dev),
        token_embeddings=features.new_zeros(B, 0, features.shape[-1]),
        input_ids=None,
        corrupted_ids=None,
        is_corrupted=torch.zeros(B, 0, dtype=torch.bool, device=dev),
        corrupt_frac=torch.zeros(B, device=dev),
        input_mask=torch.ones(B, 1, dtype=torch.bool, device=dev),
    )


class RouterModel(PreTrainedModel):
    """Router = NeuralTree (text root, trunk, branches, leaves) + :class:`ContextEncoder` added at the trunk.

    ``forward(text_features=(B, H) | input_ids=(B, T) with attention_mask, context=(B, F))``
    returns :class:`RouterOutput`; :meth:`predict` gives calibrated numpy predictions.
    """

    config_class = RouterConfig
    base_model_prefix = "router"
    main_input_name = "text_features"

    def __init__(self, config: RouterConfig):
        super().__init__(config)
        tree_config = config.tree_config()
        self.tree = NeuralTreeModel(tree_config)
        if config.text_depth:
            truncate_encoder(self.tree.roots[TEXT_ROOT].model, config.text_depth)
        pooling = tree_config.root_specs()[TEXT_ROOT].pooling
        if pooling != "mean":
            raise ConfigError(f"The router's text root must pool 'mean' (its features are layer means over "
                              f"RouterConfig.text_layers); this config's text root has pooling {pooling!r}.")
        if config.text_layers is None:  # resolved once, then saved explicitly with the config
            depth = int(getattr(self.tree.roots[TEXT_ROOT].model.config, "num_hidden_layers", 1))
            config.text_layers = list(range(-min(2, depth), 0))
        root_dim = tree_config.root_specs()[TEXT_ROOT].out_dim
        self.text_dim = root_dim * len(config.text_layers)  # width of the pooled (concatenated) text features
        self.trunk_dim = tree_config.trunk_dim()
        # several pooled layers are mixed down to the root's width, which the trunk projects as usual
        self.text_mix = torch.nn.Linear(self.text_dim, root_dim) if len(config.text_layers) > 1 else torch.nn.Identity()
        # the convex read-out (fitted after the tree, see RouterConfig.readout): topics when the router has them
        self.readout = (torch.nn.Linear(self.text_dim, len(config.topics) or len(config.masters))
                        if config.readout else None)
        self.context = ContextEncoder(len(config.context_features), config.context_hidden, self.trunk_dim)
        self.lexical = (LexicalRoot(config.lexical_buckets, config.lexical_dim, self.trunk_dim)
                        if config.lexical_buckets else None)
        # shared_hidden: the sum of the roots' projections is the hidden layer every leaf reads
        self.hidden = (torch.nn.Sequential(torch.nn.GELU(), torch.nn.Dropout(config.dropout))
                       if config.head_layout == "shared_hidden" else torch.nn.Identity())
        # (T, C) topic → owning master, built on first use: the master's logit is the log-sum-exp of its
        # topics'. A plain attribute, not a buffer: from_pretrained leaves non-persistent buffers unfilled.
        self._topic_owns: torch.Tensor | None = None
        # pooled sentence features share a large common direction and have tiny per-feature spreads;
        # standardizing them with training statistics lets the heads learn in a few epochs
        self.register_buffer("text_mean", torch.zeros(self.text_dim))
        self.register_buffer("text_std", torch.ones(self.text_dim))
        self._special: tuple[list[int], list[int], int] | None = None  # the text tokenizer's, found on first use
        self.post_init()

    @torch.no_grad()
    def fit_text_standardization(self, features: torch.Tensor) -> None:
        """Store mean and std of training text features ``(N, H)`` (saved with the weights)."""
        f = torch.as_tensor(features, dtype=torch.float32)
        std = f.std(0, unbiased=False)
        self.text_mean.copy_(f.mean(0))
        self.text_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def standardize_text(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled text features ``(N, H)`` scaled with the training statistics (what the heads read)."""
        return (features.float().to(self.text_mean.device) - self.text_mean) / self.text_std

    def _init_weights(self, module: torch.nn.Module) -> None:
        # the tree initializes its own nodes; only the context encoder and text mix are ours
        ours = [*self.context.modules(), self.text_mix, self.readout]
        if isinstance(module, torch.nn.Linear) and any(module is m for m in ours):
            torch.nn.init.normal_(module.weight, std=0.02)
            torch.nn.init.zeros_(module.bias)

    @classmethod
    def from_pretrained_text(cls, config: RouterConfig) -> RouterModel:
        """A new router whose text root holds the pretrained encoder weights of ``config.text_source``."""
        model = cls(config)
        tree = NeuralTreeModel.from_pretrained_roots(config.tree_config())
        if config.text_depth:
            truncate_encoder(tree.roots[TEXT_ROOT].model, config.text_depth)
        model.tree.roots.load_state_dict(tree.roots.state_dict())
        model.tree._tokenizers.update(tree._tokenizers)
        return model.eval()  # as HF from_pretrained: callers switch to train() explicitly

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """HF ``save_pretrained`` plus the text tokenizer in ``tokenizer_text/`` (self-contained folder)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.text_tokenizer().save_pretrained(tokenizer_dir(save_directory, TEXT_ROOT))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> RouterModel:
        """HF ``from_pretrained`` (safetensors only), reattaching the saved text tokenizer."""
        kwargs.setdefault("use_safetensors", True)
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        saved = tokenizer_dir(pretrained_model_name_or_path, TEXT_ROOT)
        if saved.is_dir():
            spec = model.tree.config.root_specs()[TEXT_ROOT]
            model.tree.set_root_tokenizer(TEXT_ROOT, root_tokenizer(TEXT_ROOT, spec, pretrained_model_name_or_path))
        return model

    @property
    def masters(self) -> list[str]:
        return self.config.master_names

    def text_tokenizer(self):
        """The text root's tokenizer (saved copy in the router folder, else the source's)."""
        # the tree's own cache first: root_tokenizers() re-parses every root spec (~1 ms), once per decision
        tok = self.tree._tokenizers.get(TEXT_ROOT)
        return tok if tok is not None else self.tree.root_tokenizers()[TEXT_ROOT]

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled text features ``(B, H * len(text_layers))`` of tokenized texts ``(B, T)``."""
        root = self.tree.roots[TEXT_ROOT]
        root.validate(TEXT_ROOT, {"input_ids": input_ids, "attention_mask": attention_mask})
        return pool_layers(root.model, input_ids, attention_mask, self.config.text_layers)

    def word_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of whole texts (no special tokens, no truncation): the one tokenization a
        decision needs; the text root reads their first ``max_text_tokens`` (:meth:`encoder_inputs`),
        the lexical root all of them (:meth:`lexical_bags_from_ids`)."""
        tok = self.text_tokenizer()
        return tok(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    def encoder_inputs(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` ``(B, T)`` for the text root from :meth:`word_ids` output, equal to
        tokenizing the texts with truncation to ``max_text_tokens`` (special tokens added, right-padded)."""
        if self._special is None:
            self._special = special_tokens(self.text_tokenizer())
        return encoder_batch(ids, self.config.max_text_tokens, self._special)

    def lexical_bags(self, texts: Sequence[str]) -> LexicalBags | None:
        """Hashed n-gram bags of whole texts for the lexical root (``None`` without one)."""
        return self.lexical_bags_from_ids(self.word_ids(texts)) if self.lexical is not None else None

    def lexical_bags_from_ids(self, ids: Sequence[Sequence[int]]) -> LexicalBags | None:
        """Bags from :meth:`word_ids` output (``None`` without a lexical root)."""
        if self.lexical is None:
            return None
        return hash_bags(ids, self.text_tokenizer().vocab_size, self.config.lexical_buckets)

    def forward(
        self,
        text_features: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        lexical: LexicalBags | None = None,
        success_leaves: bool = True,
    ) -> RouterOutput:
        """``success_leaves=False`` skips the per-master success leaves (``success_logits`` is then ``None``):
        a router serving a success head (:mod:`.success`) does not read them."""
        if (text_features is None) == (input_ids is None):
            raise ModelInputError(
                "Pass exactly one of text_features (B, H) (cached pooled text features) or input_ids (B, T) "
                "with attention_mask (tokenized with model.text_tokenizer())."
            )
        if input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            text_features = self.text_features(input_ids, attention_mask)
        H = self.text_dim
        if text_features.dim() != 2 or text_features.shape[1] != H:
            raise ModelInputError(f"text_features must be (B, {H}); got {tuple(text_features.shape)}.")
        B = text_features.shape[0]
        if context is None:  # all features missing: the encoder sees the training means
            context = text_features.new_full((B, self.context.num_features), float("nan"))
        if context.shape[0] != B:
            raise ModelInputError(f"context has {context.shape[0]} rows for {B} texts; pass one row per text.")
        standardized = self.standardize_text(text_features)
        z = self.text_mix(standardized)
        trunk = self.tree.trunk({TEXT_ROOT: pooled_root_output(z)})
        features = trunk.features + self.context(context)  # (B, 1, D)
        if self.lexical is not None:
            if lexical is None or len(lexical) != B:
                raise ModelInputError(f"This router has a lexical root: pass lexical bags for the {B} texts "
                                      "(model.lexical_bags(texts)).")
            features = features + self.lexical(lexical)
        keys = None if success_leaves else [k for k in self.tree.leaves if not k.startswith("success_")]
        out = self.tree.call_from_trunk(self.hidden(features), keys, trunk.attention_mask, trunk.root_spans)
        leaves = out.leaf_outputs
        C = len(self.masters)
        success = None
        if "success" in self.config.outcomes and success_leaves:
            # log-odds of each master's binary success head: logit(success) - logit(failure)
            success = torch.stack([leaves[success_leaf(i)].logits[..., 1] - leaves[success_leaf(i)].logits[..., 0]
                                   for i in range(C)], dim=-1)
        dur, tok = leaves.get("duration"), leaves.get("tokens")
        return RouterOutput(
            master_logits=self._blend_readout(self._master_logits(leaves), standardized), success_logits=success,
            duration_loc=dur.loc if dur is not None else None, duration_scale=dur.scale if dur is not None else None,
            tokens_loc=tok.loc if tok is not None else None, tokens_scale=tok.scale if tok is not None else None,
            tree=out,
        )

    def readout_log_probs(self, standardized: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` log master probabilities of the read-out on standardized text features (topic
        probabilities summed per master)."""
        logits = self.readout(standardized)
        if not self.config.topics:
            return torch.log_softmax(logits, dim=-1)
        return self._topics_to_masters(torch.log_softmax(logits, dim=-1))

    def _blend_readout(self, master_logits: torch.Tensor, standardized: torch.Tensor) -> torch.Tensor:
        """``(E, B, C)`` log of ``(1 - w) softmax(tree) + w p_readout`` (the tree's logits when ``w`` is 0)."""
        w = self.config.readout_weight
        if self.readout is None or w <= 0.0:
            return master_logits
        r = self.readout_log_probs(standardized).unsqueeze(0)
        if w >= 1.0:
            return r.expand_as(master_logits)
        return torch.logaddexp(math.log1p(-w) + torch.log_softmax(master_logits, dim=-1), math.log(w) + r)

    def _topics_to_masters(self, t: torch.Tensor) -> torch.Tensor:
        """Topic logits ``(..., T)`` → per master the log-sum-exp of its topics' ``(..., C)``."""
        owns = self._topic_owns
        if owns is None or owns.device != t.device:
            owner = torch.as_tensor([self.masters.index(x["master"]) for x in self.config.topics], device=t.device)
            owns = self._topic_owns = torch.nn.functional.one_hot(owner, len(self.masters)).bool()
        masked = t[..., :, None].masked_fill(~owns, float("-inf"))  # (..., T, C)
        return torch.logsumexp(masked, dim=-2)

    def _master_logits(self, leaves) -> torch.Tensor:
        """``(E, B, C)``: the master leaf's logits, or per master the log-sum-exp of its topics' logits
        (so that softmax over masters equals the sum of the topics' softmax probabilities)."""
        if not self.config.topics:
            return leaves["master"].logits
        return self._topics_to_masters(leaves["topic"].logits)  # (E, B, T) -> (E, B, C)

    def losses(
        self, out: RouterOutput, labels: torch.Tensor, outcome_master: torch.Tensor,
        success: torch.Tensor | None = None, log_minutes: torch.Tensor | None = None,
        log_tokens: torch.Tensor | None = None, topics: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-task losses from the leaves' own loss functions.

        Args:
            labels: ``(B,)`` index of the right master. outcome_master: ``(B,)`` index of the master
                that handled the task (whose outcomes the next three are).
            success: ``(B,)`` 1/0, NaN unknown. log_minutes: ``(B,)`` log(minutes), NaN unknown.
            log_tokens: ``(B,)`` log1p(tokens), NaN unknown. topics: ``(B,)`` topic index, -1 unknown.

        Returns ``{"master": ..., "success": ..., "duration": ..., "tokens": ...}`` (present heads only);
        the success loss is the mean over every observed (task, master) pair.
        """
        tree = out.tree
        if self.config.topics:
            E, B, C = out.master_logits.shape
            losses = {"master": torch.nn.functional.cross_entropy(out.master_logits.reshape(E * B, C),
                                                                  labels.long().repeat(E))}
            if topics is not None and bool((topics >= 0).any()):
                losses["topic"] = self.tree.leaf_loss("topic", tree, topics.long())
        else:
            losses = {"master": self.tree.leaf_loss("master", tree, labels)}
        C = len(self.masters)
        onehot = torch.nn.functional.one_hot(outcome_master.long(), C).bool()  # (B, C)
        if success is not None and "success" in self.config.outcomes:
            known = torch.isfinite(success)
            total = known.sum().clamp(min=1)
            parts = []
            for i in range(C):
                sel = known & onehot[:, i]
                if sel.any():
                    y = torch.where(sel, torch.nan_to_num(success, nan=0.0).long(), torch.full_like(labels, -1))
                    parts.append(self.tree.leaf_loss(success_leaf(i), tree, y) * sel.sum() / total)
            if parts:
                losses["success"] = torch.stack(parts).sum()
        for name, y in (("duration", log_minutes), ("tokens", log_tokens)):
            if y is not None and name in self.config.outcomes and torch.isfinite(y).any():
                target = torch.where(onehot, y[:, None].expand(-1, C), torch.full((len(y), C), float("nan")))
                losses[name] = self.tree.leaf_loss(name, tree, target)
        return losses

    @torch.inference_mode()
    def predict(self, text_features: torch.Tensor, context: torch.Tensor | None = None,
                lexical: LexicalBags | None = None, success_leaves: bool = True) -> RouterPredictions:
        """Calibrated predictions (temperature-scaled; ensemble logits averaged) as numpy ``(B, C)`` arrays
        (``success`` is ``None`` with ``success_leaves=False``)."""
        kwargs = {"text_features": text_features, "context": context, "lexical": lexical, "success_leaves": success_leaves}
        if self.training:  # switching modes walks every submodule: only do it when needed
            self.eval()
            try:
                out = self(**kwargs)
            finally:
                self.train()
        else:
            out = self(**kwargs)
        return outputs_to_predictions(out, self.config)


def outputs_to_predictions(out: RouterOutput, config: RouterConfig) -> RouterPredictions:
    """:class:`RouterOutput` → calibrated :class:`RouterPredictions`.

    Log-normal means: ``E[minutes] = exp(mu + s^2 / 2)``, ``E[tokens] = exp(mu + s^2 / 2) - 1``.
    """
    logits = out.master_logits.detach().float().mean(0) / config.temperature_master  # (B, C)
    probs = torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
    success = minutes = tokens = None
    if out.success_logits is not None:
        success = torch.sigmoid(out.success_logits.detach().float().mean(0) / config.temperature_success).cpu().numpy()
        success = np.where(config.observed["success"], success, np.nan)
    if out.duration_loc is not None:
        mu, s = out.duration_loc.detach().float().mean(0), out.duration_scale.detach().float().mean(0)
        minutes = np.where(config.observed["duration"], torch.exp(mu + 0.5 * s.pow(2)).cpu().numpy(), np.nan)
    if out.tokens_loc is not None:
        mu, s = out.tokens_loc.detach().float().mean(0), out.tokens_scale.detach().float().mean(0)
        tokens = np.where(config.observed["tokens"], torch.expm1(mu + 0.5 * s.pow(2)).cpu().numpy(), np.nan)
    return RouterPredictions(probs=probs, success=success, minutes=minutes, tokens=tokens)


AutoConfig.register(RouterConfig.model_type, RouterConfig, exist_ok=True)
AutoModel.register(RouterConfig, RouterModel, exist_ok=True)
