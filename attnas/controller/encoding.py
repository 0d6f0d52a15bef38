"""Cell vectors as GP inputs: two encodings of the paper's fixed-length cell description.

A cell of a K-op space is the vector ``[op_1..op_K, conn_2..conn_K]`` of ``SearchSpace``
(``op_k`` indexes ``op_choices()``, ``conn_k`` indexes ``input_choices(k)``). The GP does not see
those raw indices: an op index mixes three separate choices (type, dim, activation; paper
Sec. 4.1 lists them as separate hyper-parameters), and a connectivity index is a subset of
earlier nodes. Both encodings therefore factor each op into its type, dim and activation, and
each ``conn_k`` into one bit per earlier node (bit i = "op k reads node i").

- ``"categorical"``: one integer code per factor: K × (type, dim, activation) codes, then the
  connectivity bits as 0/1 codes (K=3: 9 + 2 + 3 = 14 features). Meant for BoTorch's
  ``CategoricalKernel`` (exp of a weighted Hamming distance: a factor either matches or not,
  with one lengthscale per factor). A bit is a two-valued categorical, so it fits too.
- ``"onehot"``: a one-hot block per type, dim and activation of each op, then the connectivity
  bits (K=3, two types: 3 × (2 + 3 + 4) + 5 = 32 features). Meant for a stationary kernel
  (Matern-5/2 with ARD): squared distances between one-hot blocks are 0 or 2, so it is again a
  weighted-Hamming kernel, but with one lengthscale per category rather than per factor, and the
  Matern profile instead of the exponential one.

``match_matrix`` gives, for either encoding, a 0/1 matrix H with one column per (factor, value)
such that the number of matching factors of two cells is ``H_x · H_z``; the GP's fast path uses
it to evaluate the categorical kernel for all candidates with one matrix product.

``coordinate_factors`` and ``grid_split`` describe the space as the grid it is: every factor is
a function of one coordinate of the cell vector, and ``all_vectors`` is the full mixed-radix
product of the coordinates. A kernel that is a product over factors (the categorical one) is
then a product over coordinates, so its values at every cell of the space are the outer
product of two small tables, one over the leading coordinates and one over the rest (the GP
uses that to score the whole space without forming its cross-covariance cell by cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from attnas.space import SearchSpace

ENCODINGS = ("categorical", "onehot")


@dataclass
class CellEncoder:
    """Encode cell vectors of ``space`` for the GP (see the module docstring).

    Args:
        space: the search space.
        kind: ``"categorical"`` or ``"onehot"``.
    """

    space: SearchSpace
    kind: str = "categorical"
    _full: dict[str, np.ndarray | torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ENCODINGS:
            raise ValueError(
                f"unknown cell encoding {self.kind!r}; choose one of {list(ENCODINGS)}"
            )
        ops = self.space.op_choices()
        self.types = _ordered(o.type for o in ops)
        self.dims = _ordered(o.dim for o in ops)
        self.activations = _ordered(o.activation for o in ops)
        # (n_op_choices, 3): type / dim / activation code of each op choice
        self._op_codes = np.array(
            [
                (
                    self.types.index(o.type),
                    self.dims.index(o.dim),
                    self.activations.index(o.activation),
                )
                for o in ops
            ],
            dtype=np.int64,
        )
        k_ops = self.space.num_ops
        # conn_bits[k] (k = 2..K): (n_input_choices(k), k) bit table over nodes 0..k-1
        self._conn_bits = {
            k: np.array(
                [[int(i in combo) for i in range(k)] for combo in self.space.input_choices(k)],
                dtype=np.int64,
            )
            for k in range(2, k_ops + 1)
        }
        self.cardinalities = self.space.cardinalities()
        # categories per factor, in feature order
        factor_sizes = [len(self.types), len(self.dims), len(self.activations)] * k_ops
        factor_sizes += [2] * sum(range(2, k_ops + 1))
        self.factor_sizes: list[int] = factor_sizes

    # ------------------------------------------------------------------ sizes
    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def num_features(self) -> int:
        """Width of ``features`` (the GP's input dimension)."""
        if self.kind == "categorical":
            return self.num_factors
        k_ops = self.space.num_ops
        per_op = len(self.types) + len(self.dims) + len(self.activations)
        return k_ops * per_op + sum(range(2, k_ops + 1))

    # ------------------------------------------------------------------ encodings
    def factor_codes(self, vectors: np.ndarray) -> np.ndarray:
        """Integer code of every factor.

        Shape:
            vectors: (N, D) cell vectors -> (N, num_factors) int64 codes.
        """
        vectors = np.asarray(vectors, dtype=np.int64).reshape(-1, len(self.cardinalities))
        k_ops = self.space.num_ops
        parts = [self._op_codes[vectors[:, k]] for k in range(k_ops)]  # each (N, 3)
        parts += [self._conn_bits[k][vectors[:, k_ops + k - 2]] for k in range(2, k_ops + 1)]
        return np.concatenate(parts, axis=1)  # (N, num_factors)

    def features(self, vectors: np.ndarray) -> torch.Tensor:
        """GP inputs (float64).

        Shape:
            vectors: (N, D) -> (N, num_features).
        """
        codes = self.factor_codes(vectors)  # (N, F)
        if self.kind == "categorical":
            return torch.from_numpy(codes.astype(np.float64))
        k_ops = self.space.num_ops
        blocks = []
        for k in range(k_ops):
            for j, size in enumerate((len(self.types), len(self.dims), len(self.activations))):
                blocks.append(np.eye(size, dtype=np.float64)[codes[:, 3 * k + j]])
        blocks.append(codes[:, 3 * k_ops :].astype(np.float64))  # connectivity bits as they are
        return torch.from_numpy(np.concatenate(blocks, axis=1))  # (N, num_features)

    def match_matrix(self, vectors: np.ndarray) -> torch.Tensor:
        """0/1 matrix whose row products count matching factors (float64).

        Shape:
            vectors: (N, D) -> (N, sum(factor_sizes)).
        """
        codes = self.factor_codes(vectors)  # (N, F)
        blocks = [np.eye(s, dtype=np.float64)[codes[:, i]] for i, s in enumerate(self.factor_sizes)]
        return torch.from_numpy(np.concatenate(blocks, axis=1))

    def coordinate_factors(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each coordinate d of the cell vector: the codes of its factors, and which.

        Returns:
            one ``(codes, factors)`` pair per coordinate: ``codes`` (cardinality_d, f_d) int64,
            the factor codes of each value of coordinate d, and ``factors`` (f_d,) int64, their
            columns in ``factor_codes``.
        """
        out, start = [], 0
        tables = [self._op_codes] * self.space.num_ops
        tables += [self._conn_bits[k] for k in range(2, self.space.num_ops + 1)]
        for codes in tables:
            width = codes.shape[1]
            out.append((codes, np.arange(start, start + width, dtype=np.int64)))
            start += width
        return out

    def grid_split(self) -> int:
        """The number s of leading coordinates whose grid is closest in size to the square root
        of the space's size: ``all_vectors`` index = i_lead * prod(cards[s:]) + i_rest."""
        cards = self.cardinalities
        target = 0.5 * float(np.log(np.prod(cards, dtype=np.float64)))
        sizes = [float(np.log(np.prod(cards[:s], dtype=np.float64))) for s in range(len(cards) + 1)]
        return int(np.argmin([abs(size - target) for size in sizes]))

    # ------------------------------------------------------------------ the whole space
    def all_vectors(self) -> np.ndarray:
        """Every cell vector of the space in ``SearchSpace.enumerate`` order (cached).

        Shape:
            (size, D) int64.
        """
        if "vectors" not in self._full:
            cards = self.cardinalities
            grids = np.unravel_index(np.arange(self.space.size(), dtype=np.int64), cards)
            self._full["vectors"] = np.stack(grids, axis=1).astype(np.int64)  # (size, D)
        return self._full["vectors"]  # type: ignore[return-value]

    def all_matrix(self, which: str) -> torch.Tensor:
        """``features`` or ``match_matrix`` of every cell vector (cached; see ``all_vectors``)."""
        if which not in ("features", "match"):
            raise ValueError(f"which must be 'features' or 'match', got {which!r}")
        if which not in self._full:
            vectors = self.all_vectors()
            fn = self.features if which == "features" else self.match_matrix
            self._full[which] = fn(vectors)
        return self._full[which]  # type: ignore[return-value]

    def index_of(self, vectors: np.ndarray) -> np.ndarray:
        """Position of each vector in ``all_vectors()`` (mixed radix, last coordinate fastest).

        Shape:
            (N, D) -> (N,) int64.
        """
        vectors = np.asarray(vectors, dtype=np.int64).reshape(-1, len(self.cardinalities))
        return np.ravel_multi_index(tuple(vectors.T), self.cardinalities).astype(np.int64)


def _ordered(items) -> list[str]:
    out: list[str] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
