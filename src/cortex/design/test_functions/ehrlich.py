"""Ehrlich closed-form test functions for biophysical sequence design (Stanton et al. 2024).

An Ehrlich function ``f: {0..V-1}^L -> {-inf} U [0, 1]`` has

* a feasible set: sequences whose every transition has non-zero probability under a banded-sparse
  ergodic transition matrix ``P`` (``markov.py``); infeasible sequences score ``-inf``;
* ``c`` motifs ``a(i)`` of length ``k``, cut from ONE trajectory of the chain (so all of them can be
  satisfied together by a feasible sequence), each with offsets ``s(i)`` (``s_1 = 0``, increasing);
* the quantized presence of motif ``i``,
  ``h_i(x) = max_l floor(q * #{j : x[l + s_j] = a_j} / k) / q``, with ``q`` levels (``q`` divides ``k``);
* the value ``f(x) = prod_i r(h_i(x))`` with the epistatic response ``r(h) = (1 + eps * h * (h - 1)) * h``
  (``eps = 0`` gives ``r(h) = h``).

The optimum is 1.0 and :meth:`Ehrlich.optimal_solution` builds a sequence that attains it.

Parameters and random draws follow pytorch-holo's ``holo.test_functions.closed_form.Ehrlich``
(holo-bench): the same ``random_seed`` gives the same transition matrix, motifs and spacings, and the
same values. One deliberate difference: holo accepts a ``quantization`` that does not divide
``motif_length``, where its formula ``(count // ceil(k/q)) / (k / ceil(k/q))`` can no longer reach 1.0
(k=5, q=4 tops out at 0.8); here that raises a :class:`~cortex.errors.DesignError`. When ``q`` divides
``k`` both formulas coincide.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from cortex.design.alphabet import default_alphabet, states_to_strings, strings_to_states
from cortex.design.test_functions.markov import (
    dmp_log_likelihood,
    sample_dmp,
    sample_sparse_ergodic_transition_matrix,
    stationary_distribution,
)
from cortex.errors import DesignError

# holo-bench's choices: a band of 2*int(0.4 V)+1 allowed next states per state (about 80% of them),
# rows soft-maxed at temperature 0.5 so transition probabilities are uneven
BANDWIDTH_FRACTION = 0.4
SOFTMAX_TEMPERATURE = 0.5


@dataclass(frozen=True)
class EhrlichConfig:
    """The parameters of one Ehrlich function; validates itself on construction.

    Args:
        num_states: vocabulary size ``V`` (>= 2).
        dim: sequence length ``L``.
        num_motifs: number of motifs ``c``.
        motif_length: motif length ``k``; ``c * k <= L`` so that all motifs fit.
        quantization: number of levels ``q`` of each motif's presence; divides ``k``. ``None`` means ``k``.
        epistasis_factor: ``eps`` in the response ``(1 + eps * h * (h - 1)) * h``; in ``[0, 4]`` so that the
            response stays non-negative.
        noise_std: standard deviation of Gaussian noise added to feasible values by ``__call__``.
        negate: return ``-f`` (for minimisers); infeasible sequences then score ``+inf``.
        random_seed: selects the function instance (matrix, motifs, spacings).
    """

    num_states: int = 5
    dim: int = 7
    num_motifs: int = 1
    motif_length: int = 3
    quantization: int | None = None
    epistasis_factor: float = 0.0
    noise_std: float = 0.0
    negate: bool = False
    random_seed: int = 0

    def __post_init__(self) -> None:
        for field in ("num_states", "dim", "num_motifs", "motif_length", "random_seed"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise DesignError(f"{field}={value!r} must be an integer.")
        if self.num_states < 2:
            raise DesignError(f"num_states={self.num_states} must be at least 2.")
        for field in ("dim", "num_motifs", "motif_length"):
            if getattr(self, field) < 1:
                raise DesignError(f"{field}={getattr(self, field)} must be at least 1.")
        if self.num_motifs * self.motif_length > self.dim:
            raise DesignError(
                f"The motifs cannot fit: num_motifs * motif_length = {self.num_motifs} * {self.motif_length} = "
                f"{self.num_motifs * self.motif_length} > dim = {self.dim}; raise dim or lower num_motifs/motif_length."
            )
        q = self.quantization
        if q is not None:
            if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= self.motif_length:
                raise DesignError(
                    f"quantization={q!r} must be an integer in 1..motif_length={self.motif_length} (or None for "
                    "motif_length)."
                )
            if self.motif_length % q:
                divisors = [d for d in range(1, self.motif_length + 1) if self.motif_length % d == 0]
                raise DesignError(
                    f"quantization={q} does not divide motif_length={self.motif_length}, so the optimum would not "
                    f"be 1.0; use one of {divisors}."
                )
        if not (math.isfinite(self.epistasis_factor) and 0.0 <= self.epistasis_factor <= 4.0):
            raise DesignError(f"epistasis_factor={self.epistasis_factor} must be in [0, 4] (0 means no epistasis).")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0.0):
            raise DesignError(f"noise_std={self.noise_std} must be a finite number >= 0.")

    @property
    def levels(self) -> int:
        """The effective quantization ``q`` (``motif_length`` when ``quantization`` is None)."""
        return self.motif_length if self.quantization is None else self.quantization

    @property
    def variant(self) -> str:
        """The paper's short name ``"V,L,c,k,q"``."""
        return f"{self.num_states},{self.dim},{self.num_motifs},{self.motif_length},{self.levels}"

    @classmethod
    def from_variant(cls, variant: str, **overrides) -> "EhrlichConfig":
        """Parse ``"V,L,c,k,q"`` (e.g. ``"32,32,4,4,4"``) into a config; ``overrides`` set the other fields."""
        parts = [p.strip() for p in str(variant).split(",")]
        if len(parts) != 5 or not all(p.lstrip("-").isdigit() for p in parts):
            raise DesignError(
                f"variant={variant!r} is not five integers 'num_states,dim,num_motifs,motif_length,quantization'; "
                "pass e.g. '32,32,4,4,4'."
            )
        v, length, c, k, q = (int(p) for p in parts)
        return cls(num_states=v, dim=length, num_motifs=c, motif_length=k, quantization=q, **overrides)


def cubic_response(presence: torch.Tensor, epistasis_factor: float) -> torch.Tensor:
    """The epistatic response ``(1 + eps * h * (h - 1)) * h``: a dip below ``h`` for partial motifs."""
    return (epistasis_factor * presence * (presence - 1.0) + 1.0) * presence


class Ehrlich:
    """An Ehrlich function; call it on ``LongTensor [..., dim]`` of states to get values ``[...]`` (float64).

    Shapes follow BoTorch test functions: ``f(X)`` with ``X`` of shape ``[batch, dim]`` returns ``[batch]``.
    Float inputs holding whole numbers are accepted (BoTorch passes floats) and cast to integers.

    Attributes:
        transition_matrix: ``[V, V]`` banded-sparse ergodic transition matrix (float32, as holo).
        initial_dist: ``[V]`` uniform first-state distribution used for the feasibility likelihood.
        stationary_dist: ``[V]`` stationary distribution of the chain.
        motifs: ``[c, k]`` motif states.
        spacings: ``[c, k - 1]`` gaps between consecutive motif elements (holo's ``spacings``).
        offsets: ``[c, k]`` positions of each motif element relative to its first (``offsets[:, 0] == 0``).
    """

    num_objectives = 1
    optimal_value = 1.0

    def __init__(
        self,
        num_states: int = 5,
        dim: int = 7,
        num_motifs: int = 1,
        motif_length: int = 3,
        quantization: int | None = None,
        epistasis_factor: float = 0.0,
        noise_std: float = 0.0,
        negate: bool = False,
        random_seed: int = 0,
    ) -> None:
        self.config = cfg = EhrlichConfig(
            num_states=num_states, dim=dim, num_motifs=num_motifs, motif_length=motif_length,
            quantization=quantization, epistasis_factor=epistasis_factor, noise_std=noise_std,
            negate=negate, random_seed=random_seed,
        )
        self.num_states, self.dim = cfg.num_states, cfg.dim
        self.num_motifs, self.motif_length, self.levels = cfg.num_motifs, cfg.motif_length, cfg.levels
        self.epistasis_factor, self.noise_std, self.negate = cfg.epistasis_factor, cfg.noise_std, cfg.negate
        self.random_seed = cfg.random_seed
        self.bounds = torch.tensor([[0.0] * self.dim, [float(self.num_states - 1)] * self.dim])  # BoTorch (2, d)

        # One generator drives every draw, in holo's order: matrix, then motifs, then spacings.
        generator = torch.Generator().manual_seed(cfg.random_seed)
        self.initial_dist = torch.ones(cfg.num_states) / cfg.num_states
        self.transition_matrix = sample_sparse_ergodic_transition_matrix(
            cfg.num_states, int(cfg.num_states * BANDWIDTH_FRACTION), softmax_temp=SOFTMAX_TEMPERATURE,
            generator=generator, repeats_always_possible=True,
        )
        self.stationary_dist = stationary_distribution(self.transition_matrix)

        # All motifs are one chain trajectory cut in c pieces, so their concatenation (with repeats
        # in the gaps, always allowed) is feasible: a solution scoring 1.0 exists by construction.
        trajectory = sample_dmp(self.stationary_dist, self.transition_matrix, cfg.num_motifs * cfg.motif_length,
                                num_samples=1, generator=generator).squeeze(0)
        self.motifs = trajectory.view(cfg.num_motifs, cfg.motif_length)

        # Each motif may spread over k + slack // c positions: gaps are 1 + floor(share of the slack),
        # with shares drawn uniformly on the simplex.
        slack = cfg.dim - cfg.num_motifs * cfg.motif_length
        spacings = []
        for _ in range(cfg.num_motifs):
            weights = torch.rand(cfg.motif_length - 1, generator=generator)
            weights = weights / weights.sum()
            spacings.append(1 + ((slack // cfg.num_motifs) * weights).floor().to(torch.int64))
        self.spacings = torch.stack(spacings) if spacings else torch.zeros(cfg.num_motifs, 0, dtype=torch.int64)
        self.offsets = torch.cat(
            [torch.zeros(cfg.num_motifs, 1, dtype=torch.int64), self.spacings.cumsum(-1)], dim=-1
        )
        self._feasible_transitions = self.transition_matrix > 0  # (V, V) bool
        self._noise_generator = torch.Generator().manual_seed(cfg.random_seed)

    @classmethod
    def from_config(cls, config: EhrlichConfig) -> "Ehrlich":
        """Build the function described by ``config``."""
        return cls(**asdict(config))

    @classmethod
    def from_variant(cls, variant: str, **overrides) -> "Ehrlich":
        """Build from the paper's short name ``"V,L,c,k,q"``, e.g. ``Ehrlich.from_variant("32,32,4,4,4")``."""
        return cls.from_config(EhrlichConfig.from_variant(variant, **overrides))

    # ----------------------------------------------------------------------------------- inputs
    def _as_states(self, X: torch.Tensor) -> torch.LongTensor:
        if not isinstance(X, torch.Tensor):
            raise DesignError(
                f"Ehrlich expects a torch tensor of states, got {type(X).__name__}; pass torch.tensor(...)."
            )
        if X.dim() < 1 or X.shape[-1] != self.dim:
            raise DesignError(
                f"Input of shape {tuple(X.shape)} does not end in dim={self.dim}; pass [batch, {self.dim}] states."
            )
        if X.is_floating_point():
            if not torch.equal(X, X.round()):
                raise DesignError("Float input holds non-integer values; pass whole-number states 0..V-1.")
            X = X.long()
        elif X.dtype == torch.bool or X.is_complex():
            raise DesignError(f"Input dtype {X.dtype} is not an integer type; pass a LongTensor of states.")
        X = X.long()
        if X.numel() and (int(X.min()) < 0 or int(X.max()) >= self.num_states):
            raise DesignError(
                f"Input holds states outside 0..{self.num_states - 1} (min {int(X.min())}, max {int(X.max())}); "
                f"pass states below num_states={self.num_states}."
            )
        return X

    # ----------------------------------------------------------------------------------- values
    def is_feasible(self, X: torch.Tensor) -> torch.BoolTensor:
        """Whether every transition of each sequence is allowed, shape ``X.shape[:-1]``."""
        X = self._as_states(X)
        flat = X.reshape(-1, self.dim)
        ok = self._feasible_transitions[flat[:, :-1], flat[:, 1:]].all(-1)
        return ok.reshape(X.shape[:-1])

    def log_likelihood(self, X: torch.Tensor) -> torch.Tensor:
        """Log-probability under the chain (uniform first state), shape ``X.shape[:-1]``; ``-inf`` if infeasible."""
        X = self._as_states(X)
        return dmp_log_likelihood(X.reshape(-1, self.dim), self.initial_dist, self.transition_matrix).reshape(
            X.shape[:-1]
        )

    def motif_presence(self, X: torch.Tensor) -> torch.Tensor:
        """Quantized presence ``h_i(x)`` of every motif, shape ``X.shape[:-1] + (c,)``, in ``{0, 1/q, .., 1}``."""
        X = self._as_states(X)
        flat = X.reshape(-1, self.dim)  # (B, L)
        per_motif = []
        for motif, offset in zip(self.motifs, self.offsets):
            starts = torch.arange(self.dim - int(offset[-1]))  # every placement that fits
            windows = flat[:, starts.unsqueeze(1) + offset]  # (B, placements, k)
            count = windows.eq(motif).sum(-1).max(-1).values  # best placement's matches, (B,)
            # floor(q * count / k) / q, exact in integers since q divides k
            level = torch.div(count, self.motif_length // self.levels, rounding_mode="floor")
            per_motif.append(level.to(torch.float64) / self.levels)  # float64: 1/3 stays 1/3 to the last bit
        presence = torch.stack(per_motif, dim=-1)
        return presence.reshape(*X.shape[:-1], self.num_motifs)

    def evaluate_true(self, X: torch.Tensor) -> torch.Tensor:
        """Noise-free values ``prod_i r(h_i(x))`` or ``-inf`` when infeasible, shape ``X.shape[:-1]`` (float64)."""
        value = cubic_response(self.motif_presence(X), self.epistasis_factor).prod(-1)
        return torch.where(self.is_feasible(X), value, torch.full_like(value, -math.inf))

    def forward(self, X: torch.Tensor, noise: bool = True) -> torch.Tensor:
        """Values with optional Gaussian noise (feasible sequences only) and ``negate`` applied."""
        value = self.evaluate_true(X)
        if noise and self.noise_std > 0:
            jitter = torch.randn(value.shape, generator=self._noise_generator, dtype=value.dtype)
            value = value + self.noise_std * jitter  # -inf stays -inf
        return -value if self.negate else value

    __call__ = forward

    # ----------------------------------------------------------------------------------- solutions
    def optimal_solution(self) -> torch.LongTensor:
        """A feasible sequence ``[dim]`` scoring 1.0: motifs laid end to end, gaps filled by repeats."""
        solution = torch.empty(self.dim, dtype=torch.int64)
        position = 0
        for motif, offset in zip(self.motifs.tolist(), self.offsets.tolist()):
            span = offset[-1] + 1
            # each position repeats the latest motif element placed at or before it
            element = torch.searchsorted(torch.tensor(offset), torch.arange(span), right=True) - 1
            solution[position:position + span] = torch.tensor(motif)[element]
            position += span
        solution[position:] = solution[position - 1]
        value = self.evaluate_true(solution.unsqueeze(0))
        if float(value) != self.optimal_value:  # construction invariant, not user input
            raise RuntimeError(f"Ehrlich optimal_solution scored {float(value)} instead of 1.0: {self!r}")
        return solution

    def initial_solution(self, n: int = 1) -> torch.LongTensor:
        """holo's initial solution(s): chain samples drawn with a generator re-seeded by ``random_seed``.

        Returns ``[dim]`` for ``n == 1`` and ``[n, dim]`` otherwise; always the same for a given function.
        """
        generator = torch.Generator().manual_seed(self.random_seed)
        samples = sample_dmp(self.stationary_dist, self.transition_matrix, self.dim, n, generator=generator)
        return samples.squeeze(0) if n == 1 else samples

    def random_feasible(self, n: int, seed: int | torch.Generator = 0) -> torch.LongTensor:
        """``n`` feasible sequences ``[n, dim]`` sampled from the chain (first state from its stationary law).

        ``seed`` (or a ``torch.Generator``) is independent of the function's ``random_seed``, so optimizers
        can draw different starting sets on the same function.
        """
        if n < 1:
            raise DesignError(f"n={n} must be at least 1.")
        generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        return sample_dmp(self.stationary_dist, self.transition_matrix, self.dim, n, generator=generator)

    def random_solution(self, n: int = 1, seed: int = 0) -> torch.LongTensor:
        """``n`` uniformly random sequences ``[n, dim]`` (almost always infeasible for long ``dim``)."""
        generator = torch.Generator().manual_seed(int(seed))
        return torch.randint(self.num_states, (n, self.dim), generator=generator)

    # ----------------------------------------------------------------------------------- strings
    @property
    def alphabet(self) -> str:
        """The default printable alphabet for ``num_states`` (see :mod:`cortex.design.alphabet`)."""
        return default_alphabet(self.num_states)

    def to_strings(self, X: torch.Tensor) -> list[str]:
        """States ``[B, dim]`` -> strings over :attr:`alphabet`."""
        return states_to_strings(self._as_states(X).reshape(-1, self.dim), self.alphabet)

    def from_strings(self, sequences: list[str]) -> torch.LongTensor:
        """Strings over :attr:`alphabet` -> states ``[B, dim]``."""
        return strings_to_states(sequences, self.alphabet, length=self.dim)

    def __repr__(self) -> str:
        return (
            f"Ehrlich(variant={self.config.variant}, epistasis_factor={self.epistasis_factor}, "
            f"noise_std={self.noise_std}, negate={self.negate}, random_seed={self.random_seed}, "
            f"motifs={self.motifs.tolist()}, spacings={self.spacings.tolist()})"
        )
