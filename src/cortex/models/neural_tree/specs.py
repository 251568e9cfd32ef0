"""Typed node specs of a NeuralTree config: one dataclass per node kind, keyed by a config string.

:class:`~cortex.models.neural_tree.configuration.NeuralTreeConfig` stores plain dicts (so that
``config.json`` stays readable and diff-able); these dataclasses are their typed, validated views.
``parse_*`` functions turn a dict into a spec and record every problem they find (unknown keys,
unknown kinds, out-of-range values) in a :class:`Problems` list, so that a config reports all its
errors at once, each naming its field.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cortex._validate import (
    Problems,
    build_dataclass,
    build_kind,
    check_choice,
    check_fraction,
    check_positive,
    check_type,
)

ROOT_KINDS = ("conv1d", "transformer", "hf")
TRUNK_KINDS = ("sum", "concat")
BRANCH_KINDS = ("conv1d", "mlp", "transformer")
LEAF_KINDS = ("regressor", "classifier", "denoising_lm", "sequence_regressor")
POOLINGS = ("mean", "max", "weighted_mean", "attention")
HF_POOLINGS = ("none", "mean", "cls", "last")
BUILTIN_TOKENIZERS = ("protein", "char")
_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


def check_node_name(where: str, name: Any, problems: Problems) -> None:
    """Node names become module names: letters, digits, ``_`` and ``-``, no dots."""
    if not isinstance(name, str) or not _NODE_NAME.match(name):
        problems.add(
            f"{where} name {name!r} is not a valid node name; use letters, digits, '_' or '-' "
            "(starting with a letter or '_', no dots), e.g. 'protein' or 'solubility'."
        )


# ---------------------------------------------------------------------------------------------- roots
@dataclass
class CorruptionSpec:
    """Default corruption of a root (a forward pass may override the kind per example).

    Attributes:
        kind: ``mask``, ``substitution`` or ``gaussian``.
        substitution: ``uniform`` or ``blosum62`` (protein roots only).
        gaussian_scale: standard deviation of Gaussian noise on embeddings.
        schedule: noise schedule name (see :mod:`cortex.corruption.schedules`).
        num_steps: number of diffusion steps of the schedule.
    """

    kind: str = "mask"
    substitution: str = "uniform"
    gaussian_scale: float = 1.0
    schedule: str = "cosine"
    num_steps: int = 1000

    def check(self, where: str, problems: Problems) -> None:
        from cortex.corruption import CORRUPTION_KINDS, SCHEDULES, SUBSTITUTIONS

        check_choice(f"{where}.kind", self.kind, CORRUPTION_KINDS, problems)
        check_choice(f"{where}.substitution", self.substitution, tuple(SUBSTITUTIONS), problems)
        check_choice(f"{where}.schedule", self.schedule, tuple(SCHEDULES), problems)
        check_positive(f"{where}.num_steps", self.num_steps, problems)
        if check_type(f"{where}.gaussian_scale", self.gaussian_scale, (int, float), problems) and self.gaussian_scale < 0:
            problems.add(f"{where}.gaussian_scale={self.gaussian_scale} must be >= 0.")


@dataclass
class RootSpec:
    """Fields every root has. Subclasses add their kind's fields and derived properties:
    ``out_dim``, ``vocab_size``, ``pad_token_id``, ``mask_token_id``, ``special_token_ids``,
    ``limit`` (longest input, or ``None``) and ``pooled`` (features are one vector per example)."""

    kind: str = ""
    corruption: dict = field(default_factory=dict)

    builtin: ClassVar[bool] = True

    @property
    def corruption_spec(self) -> CorruptionSpec:
        return CorruptionSpec(**self.corruption)

    @property
    def pooled(self) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["corruption"] = dataclasses.asdict(self.corruption_spec)
        return out

    def check(self, where: str, problems: Problems) -> None:
        if not isinstance(self.corruption, dict):
            problems.add(f"{where}.corruption must be a dict such as {{'kind': 'mask'}}; got {self.corruption!r}.")
            self.corruption = {}
            return
        spec = build_dataclass(CorruptionSpec, self.corruption, f"{where}.corruption", problems)
        spec.check(f"{where}.corruption", problems)
        self.corruption = dataclasses.asdict(spec)
        if spec.substitution == "blosum62" and getattr(self, "tokenizer", None) != "protein":
            problems.add(
                f"{where}.corruption.substitution='blosum62' needs a protein root; this root's tokenizer is "
                f"{getattr(self, 'tokenizer', None)!r}. Use substitution='uniform'."
            )


@functools.lru_cache(maxsize=16)
def builtin_vocab(tokenizer: str, chars: str | None) -> tuple[int, int, int, tuple[int, ...]]:
    """``(vocab_size, pad_id, mask_id, special_ids)`` of a built-in tokenizer (cached: they are fixed)."""
    from cortex.data.tokenizers import build_char_tokenizer, build_protein_tokenizer

    tok = build_protein_tokenizer() if tokenizer == "protein" else (
        build_char_tokenizer(chars) if chars is not None else build_char_tokenizer()
    )
    return len(tok), tok.pad_token_id, tok.mask_token_id, tuple(sorted(tok.all_special_ids))


@dataclass
class _BuiltinRootSpec(RootSpec):
    tokenizer: str = "protein"
    chars: str | None = None
    max_len: int = 256
    dropout: float = 0.0

    def _vocab(self) -> tuple[int, int, int, tuple[int, ...]]:
        return builtin_vocab(self.tokenizer, self.chars)

    @property
    def vocab_size(self) -> int:
        return self._vocab()[0]

    @property
    def pad_token_id(self) -> int:
        return self._vocab()[1]

    @property
    def mask_token_id(self) -> int:
        return self._vocab()[2]

    @property
    def special_token_ids(self) -> list[int]:
        return list(self._vocab()[3])

    @property
    def limit(self) -> int:
        return self.max_len

    def check(self, where: str, problems: Problems) -> None:
        if check_choice(f"{where}.tokenizer", self.tokenizer, BUILTIN_TOKENIZERS, problems) and self.tokenizer == "protein" \
                and self.chars is not None:
            problems.add(f"{where}.chars is only for tokenizer='char'; remove it for a protein root.")
        if self.chars is not None and (not isinstance(self.chars, str) or not self.chars):
            problems.add(f"{where}.chars must be a non-empty string of characters; got {self.chars!r}.")
        check_positive(f"{where}.max_len", self.max_len, problems)
        check_fraction(f"{where}.dropout", self.dropout, problems, upper_open=True)
        super().check(where, problems)


@dataclass
class Conv1dRootSpec(_BuiltinRootSpec):
    """Built-in root: token embedding → (sinusoidal positions) → residual Conv1d blocks.

    Features ``(B, T, out_dim)``; ``num_blocks`` blocks go ``embed_dim → hidden_dim → ... → out_dim``.
    """

    kind: str = "conv1d"
    embed_dim: int = 32
    hidden_dim: int = 32
    out_dim: int = 32
    num_blocks: int = 2
    kernel_size: int = 5
    pos_encoding: bool = True

    def check(self, where: str, problems: Problems) -> None:
        for name in ("embed_dim", "hidden_dim", "out_dim", "num_blocks", "kernel_size"):
            check_positive(f"{where}.{name}", getattr(self, name), problems)
        check_type(f"{where}.pos_encoding", self.pos_encoding, (bool,), problems)
        super().check(where, problems)


@dataclass
class TransformerRootSpec(_BuiltinRootSpec):
    """Built-in root: token + learned position embedding → pre-norm bidirectional transformer.

    Features ``(B, T, hidden_dim)``.
    """

    kind: str = "transformer"
    hidden_dim: int = 32
    num_layers: int = 2
    num_heads: int = 2
    ff_dim: int | None = None

    @property
    def out_dim(self) -> int:
        return self.hidden_dim

    def check(self, where: str, problems: Problems) -> None:
        for name in ("hidden_dim", "num_layers", "num_heads"):
            check_positive(f"{where}.{name}", getattr(self, name), problems)
        if self.ff_dim is not None:
            check_positive(f"{where}.ff_dim", self.ff_dim, problems)
        if isinstance(self.hidden_dim, int) and isinstance(self.num_heads, int) and self.num_heads > 0 \
                and self.hidden_dim % self.num_heads:
            problems.add(
                f"{where}.hidden_dim={self.hidden_dim} is not divisible by num_heads={self.num_heads}; "
                "pick sizes with hidden_dim % num_heads == 0."
            )
        super().check(where, problems)


@dataclass
class HFRootSpec(RootSpec):
    """A root made of any HF ``AutoModel`` encoder or decoder.

    Attributes:
        source: registry name or local folder it came from (read once, when the config is made).
        pooling: ``none`` keeps ``(B, T, H)``; ``mean``, ``cls`` or ``last`` give ``(B, 1, H)``.
        freeze: no gradients into the backbone, which also stays in eval mode (no dropout).
        hidden_layer: which ``hidden_states`` entry to use; ``-1`` is the model's final output.
        trust_remote_code: passed to ``AutoConfig``/``AutoTokenizer``; off unless you opt in.
        max_len: longest input (default: the backbone's ``max_position_embeddings``).
        backbone_config: the backbone's ``config.to_dict()``, filled from ``source`` so that the saved
            tree rebuilds the backbone without it (its weights are in the tree's safetensors).
        vocab_size, pad_token_id, mask_token_id, special_token_ids, hidden_size: read from the
            backbone config and tokenizer at the same time.
    """

    kind: str = "hf"
    source: str | None = None
    pooling: str = "none"
    freeze: bool = False
    hidden_layer: int = -1
    trust_remote_code: bool = False
    max_len: int | None = None
    backbone_config: dict | None = None
    vocab_size: int | None = None
    pad_token_id: int | None = None
    mask_token_id: int | None = None
    special_token_ids: list[int] = field(default_factory=list)
    hidden_size: int | None = None

    builtin: ClassVar[bool] = False

    @property
    def out_dim(self) -> int:
        return int(self.hidden_size or 0)

    @property
    def pooled(self) -> bool:
        return self.pooling != "none"

    @property
    def limit(self) -> int | None:
        return self.max_len

    def check(self, where: str, problems: Problems) -> None:
        check_choice(f"{where}.pooling", self.pooling, HF_POOLINGS, problems)
        check_type(f"{where}.freeze", self.freeze, (bool,), problems)
        check_type(f"{where}.hidden_layer", self.hidden_layer, (int,), problems)
        check_type(f"{where}.trust_remote_code", self.trust_remote_code, (bool,), problems)
        if self.backbone_config is None:
            if not isinstance(self.source, str) or not self.source:
                problems.add(
                    f"{where}.source is missing; name a registry model (cortex models list) or a local folder "
                    "holding config.json, e.g. {'kind': 'hf', 'source': 'all-minilm-l6-v2'}."
                )
            else:
                self._resolve(where, problems)
        if self.max_len is not None:
            check_positive(f"{where}.max_len", self.max_len, problems)
        layers = (self.backbone_config or {}).get("num_hidden_layers")
        if isinstance(layers, int) and isinstance(self.hidden_layer, int) and not -(layers + 1) <= self.hidden_layer <= layers:
            problems.add(
                f"{where}.hidden_layer={self.hidden_layer} is out of range for a backbone with {layers} layers; "
                f"use -1 (final output) or 0..{layers} (0 = embeddings)."
            )
        super().check(where, problems)

    def _resolve(self, where: str, problems: Problems) -> None:
        """Read the backbone config (and tokenizer, if present) from ``source``; no network."""
        from pathlib import Path

        from transformers import AutoConfig

        from cortex.errors import CortexError
        from cortex.hub.registry import resolve_model_path

        try:
            path = resolve_model_path(self.source)
        except CortexError as e:
            problems.add(
                f"{where}.source={self.source!r} is neither a local folder nor a registry entry ({e}). "
                "Import it first (cortex import-model ...) or pass the folder that holds its config.json."
            )
            return
        if not (Path(path) / "config.json").is_file():
            problems.add(f"{where}.source={self.source!r} resolves to {path}, which has no config.json.")
            return
        try:
            cfg = AutoConfig.from_pretrained(path, trust_remote_code=self.trust_remote_code)
        except (ValueError, OSError, KeyError) as e:
            problems.add(
                f"{where}.source={self.source!r}: transformers cannot read its config ({e}). If it needs custom "
                "code and you trust it, set trust_remote_code=True."
            )
            return
        self.backbone_config = cfg.to_dict()
        self.hidden_size = int(getattr(cfg, "hidden_size", 0) or 0) or None
        if self.hidden_size is None:
            problems.add(f"{where}.source={self.source!r}: its config has no hidden_size; cortex cannot size the trunk.")
        self.vocab_size = getattr(cfg, "vocab_size", None)
        if self.max_len is None:
            self.max_len = getattr(cfg, "max_position_embeddings", None)
        self.pad_token_id = getattr(cfg, "pad_token_id", None)
        if any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code)
            self.mask_token_id = tok.mask_token_id
            if tok.pad_token_id is not None:
                self.pad_token_id = tok.pad_token_id
            self.special_token_ids = sorted(int(i) for i in tok.all_special_ids)


ROOT_SPECS: dict[str, type[RootSpec]] = {
    "conv1d": Conv1dRootSpec,
    "transformer": TransformerRootSpec,
    "hf": HFRootSpec,
}


def parse_root(name: str, data: Any, problems: Problems) -> RootSpec | None:
    return build_kind(ROOT_SPECS, data, f"roots.{name}", problems, "conv1d", "{'kind': 'conv1d'}")


# ---------------------------------------------------------------------------------------------- trunk
@dataclass
class TrunkSpec:
    """How root features are combined into one ``(B, T, out_dim)`` sequence.

    Attributes:
        kind: ``sum`` adds root features position by position (roots must share their length, or
            be pooled to length 1, which broadcasts); ``concat`` places the roots' positions side by
            side along the sequence axis (any lengths), after adding a learned per-root embedding.
        out_dim: trunk width; default the widest root.
        project: ``sum`` only: project roots whose width differs from ``out_dim`` with a linear map.
            ``concat`` always projects such roots.
    """

    kind: str = "sum"
    out_dim: int | None = None
    project: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self, where: str, problems: Problems) -> None:
        check_choice(f"{where}.kind", self.kind, TRUNK_KINDS, problems)
        if self.out_dim is not None:
            check_positive(f"{where}.out_dim", self.out_dim, problems)
        check_type(f"{where}.project", self.project, (bool,), problems)


def parse_trunk(data: Any, problems: Problems) -> TrunkSpec:
    if not isinstance(data, dict):
        problems.add(f"trunk must be a dict such as {{'kind': 'sum'}}; got {data!r}.")
        return TrunkSpec()
    spec = build_dataclass(TrunkSpec, data, "trunk", problems)
    spec.check("trunk", problems)
    return spec


# -------------------------------------------------------------------------------------------- branches
@dataclass
class BranchSpec:
    """A task-family branch: per-position encoder, then pooling to one vector per example.

    Attributes:
        kind: ``conv1d`` (residual Conv1d blocks), ``mlp`` (per-position MLP) or ``transformer``.
        out_dim: branch width; ``hidden_dim`` inner width (conv1d, mlp).
        num_layers: blocks / hidden layers (0 for mlp means a single linear map).
        kernel_size: conv1d only. num_heads: transformer only.
        pooling: ``mean``, ``max`` (feature-wise), ``weighted_mean`` (learned positive weights) or ``attention`` (learned query).
    """

    kind: str = "conv1d"
    out_dim: int = 32
    hidden_dim: int = 32
    num_layers: int = 1
    kernel_size: int = 5
    num_heads: int = 2
    dropout: float = 0.0
    pooling: str = "mean"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self, where: str, problems: Problems) -> None:
        check_choice(f"{where}.kind", self.kind, BRANCH_KINDS, problems)
        check_choice(f"{where}.pooling", self.pooling, POOLINGS, problems)
        for name in ("out_dim", "hidden_dim", "kernel_size", "num_heads"):
            check_positive(f"{where}.{name}", getattr(self, name), problems)
        check_positive(f"{where}.num_layers", self.num_layers, problems, minimum=0 if self.kind == "mlp" else 1)
        check_fraction(f"{where}.dropout", self.dropout, problems, upper_open=True)
        if self.kind == "transformer" and isinstance(self.out_dim, int) and isinstance(self.num_heads, int) \
                and self.num_heads > 0 and self.out_dim % self.num_heads:
            problems.add(f"{where}.out_dim={self.out_dim} is not divisible by num_heads={self.num_heads}.")


def parse_branch(name: str, data: Any, problems: Problems) -> BranchSpec | None:
    where = f"branches.{name}"
    if not isinstance(data, dict):
        problems.add(f"{where} must be a dict such as {{'kind': 'mlp'}}; got {data!r}.")
        return None
    spec = build_dataclass(BranchSpec, data, where, problems)
    spec.check(where, problems)
    return spec


# ---------------------------------------------------------------------------------------------- leaves
@dataclass
class LeafSpec:
    """Fields every leaf has.

    Attributes:
        kind: ``regressor``, ``classifier``, ``denoising_lm`` or ``sequence_regressor``.
        branch: the branch it reads.
        ensemble_size: ``E`` copies of branch + head (roots and trunk are shared); outputs carry a
            leading ``E`` axis.
        num_layers: hidden layers in the head before the output map.
        root: the root it is tied to (required by ``denoising_lm``; positions of that root for
            sequence leaves; source of ``corrupt_frac`` for label smoothing).
        label_smoothing: a float in ``[0, 1)`` or ``"corrupt_frac"`` (per example, the root's
            corruption fraction).
    """

    kind: str = "regressor"
    branch: str = "branch"
    ensemble_size: int = 1
    num_layers: int = 0
    root: str | None = None
    label_smoothing: float | str = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self, where: str, problems: Problems) -> None:
        check_positive(f"{where}.ensemble_size", self.ensemble_size, problems)
        check_positive(f"{where}.num_layers", self.num_layers, problems, minimum=0)
        if isinstance(self.label_smoothing, str):
            if self.label_smoothing != "corrupt_frac":
                problems.add(f"{where}.label_smoothing={self.label_smoothing!r} must be a float in [0, 1) or 'corrupt_frac'.")
            elif self.root is None:
                problems.add(f"{where}.label_smoothing='corrupt_frac' needs {where}.root: the root whose corruption sets it.")
        else:
            check_fraction(f"{where}.label_smoothing", self.label_smoothing, problems, upper_open=True)


@dataclass
class _GaussianLeafSpec(LeafSpec):
    out_dim: int = 1
    nominal_label_var: float = 0.25 ** 2
    var_floor: float = 1e-4

    def check(self, where: str, problems: Problems) -> None:
        check_positive(f"{where}.out_dim", self.out_dim, problems)
        for name in ("nominal_label_var", "var_floor"):
            value = getattr(self, name)
            if check_type(f"{where}.{name}", value, (int, float), problems) and value <= 0:
                problems.add(f"{where}.{name}={value} must be > 0.")
        super().check(where, problems)


@dataclass
class RegressorLeafSpec(_GaussianLeafSpec):
    """Gaussian regression of ``out_dim`` targets per example, natural parameterization."""

    kind: str = "regressor"


@dataclass
class SequenceRegressorLeafSpec(_GaussianLeafSpec):
    """Gaussian regression of ``out_dim`` targets per position (of ``root``'s span, if given)."""

    kind: str = "sequence_regressor"


@dataclass
class ClassifierLeafSpec(LeafSpec):
    """``num_classes``-way classification of each example."""

    kind: str = "classifier"
    num_classes: int = 2

    def check(self, where: str, problems: Problems) -> None:
        check_positive(f"{where}.num_classes", self.num_classes, problems, minimum=2)
        super().check(where, problems)


@dataclass
class DenoisingLMLeafSpec(LeafSpec):
    """Masked-LM logits over ``root``'s vocabulary at each of that root's positions."""

    kind: str = "denoising_lm"
    vocab_size: int | None = None

    def check(self, where: str, problems: Problems) -> None:
        if self.root is None:
            problems.add(f"{where}.root is required for a denoising_lm leaf: name the root whose tokens it predicts.")
        if self.vocab_size is not None:
            check_positive(f"{where}.vocab_size", self.vocab_size, problems, minimum=2)
        super().check(where, problems)


LEAF_SPECS: dict[str, type[LeafSpec]] = {
    "regressor": RegressorLeafSpec,
    "classifier": ClassifierLeafSpec,
    "denoising_lm": DenoisingLMLeafSpec,
    "sequence_regressor": SequenceRegressorLeafSpec,
}


def parse_leaf(name: str, data: Any, problems: Problems) -> LeafSpec | None:
    return build_kind(LEAF_SPECS, data, f"leaves.{name}", problems, "regressor", "{'kind': 'regressor', 'branch': 'b'}")
