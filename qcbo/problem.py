"""The QCBO problem model.

A `Problem` is: minimise ``energy(x) = x @ Q @ x + offset`` over binary x (shape (n,)),
optionally subject to one cardinality constraint ``sum(x) == k``. ``Q`` is a dense
symmetric (n, n) float64 matrix; linear terms live on its diagonal (``x_i**2 == x_i``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

from .errors import InputError

__all__ = ["Problem", "PenaltyInverter", "IsingModel"]

#: Relative tolerance under which a matrix counts as symmetric.
SYMMETRY_RTOL = 1e-9


def _symmetric_from_matrix(a: np.ndarray, source: str, symmetrize: bool) -> np.ndarray:
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InputError(f"{source}: Q must be a square (n, n) matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{source}: Q contains NaN or inf; every coefficient must be finite")

    def halves() -> np.ndarray:
        with np.errstate(over="ignore"):
            sym = (a + a.T) / 2.0
        if not np.all(np.isfinite(sym)):
            raise InputError(f"{source}: (Q + Q^T) / 2 overflows to inf; scale Q down")
        return sym

    if symmetrize:
        return halves()
    if np.array_equal(a, a.T):
        return a  # np.array() in Problem.__init__ already made a private copy
    asym = np.abs(a - a.T)
    scale = float(np.abs(a).max()) if a.size else 0.0
    if asym.size == 0 or asym.max() <= SYMMETRY_RTOL * max(scale, 1e-300):
        return halves()
    if not np.any(np.tril(a, -1)):
        # An upper triangle: x U x == x ((U + U^T) / 2) x.
        return halves()
    raise InputError(
        f"{source}: Q is not symmetric (max |Q - Q^T| = {asym.max():.3g}) and not an upper "
        "triangle; pass symmetrize=True to use (Q + Q^T) / 2, which has the same energies"
    )


def _plain(label: Any) -> Any:
    """numpy scalars, also inside tuples, as Python ones (every writer can store them)."""
    if isinstance(label, np.generic):
        return label.item()
    if isinstance(label, tuple):
        return tuple(_plain(v) for v in label)
    return label


def _matrix_from_mapping(
    terms: Mapping[tuple[int, int], float], n: int | None, source: str
) -> np.ndarray:
    pairs = []
    for key, value in terms.items():
        if not (isinstance(key, tuple) and len(key) == 2
                and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                        for i in key)):
            raise InputError(f"{source}: mapping keys must be (i, j) pairs of integer "
                             f"indices, got {key!r:.60}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{source}: coefficient of {key!r} is not a number: "
                             f"{value!r:.60}") from None
        if not math.isfinite(v):
            raise InputError(f"{source}: coefficient of {key!r} is {v}; every coefficient "
                             "must be finite")
        pairs.append(((int(key[0]), int(key[1])), v))
    max_index = max((max(i, j) for (i, j), _ in pairs), default=-1)
    if n is None:
        n = max_index + 1
    elif isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"{source}: n must be a non-negative integer, got {n!r:.60}")
    if n == 0:
        raise InputError(f"{source}: Q is empty; a problem needs at least one variable")
    if max_index >= n or any(min(i, j) < 0 for (i, j), _ in pairs):
        raise InputError(f"{source}: index out of range 0..{n - 1} in the (i, j) mapping")
    q = np.zeros((n, n))
    with np.errstate(over="ignore"):
        for (i, j), v in pairs:
            if i == j:
                q[i, i] += v
            else:
                # Each (i, j) entry contributes value * x_i * x_j, split over both halves.
                q[i, j] += v / 2.0
                q[j, i] += v / 2.0
    if not np.all(np.isfinite(q)):
        raise InputError(f"{source}: the summed coefficients overflow to inf; scale Q down")
    return q


@dataclass(frozen=True)
class IsingModel:
    """Spin form of a QUBO with s_i = 2 x_i - 1 (so x = (1 + s) / 2, spin +1 <=> x = 1).

    ``energy(s) = h @ s + sum_{i<j} J[i, j] s_i s_j + offset``; J is strictly upper
    triangular (n, n).
    """

    h: np.ndarray
    J: np.ndarray
    offset: float

    def energies(self, S: np.ndarray) -> np.ndarray:
        S = np.atleast_2d(np.asarray(S, dtype=float))
        return S @ self.h + np.einsum("mi,ij,mj->m", S, self.J, S) + self.offset


class Problem:
    """A quadratic (constrained) binary optimisation problem.

    Args:
        Q: a symmetric (n, n) matrix, an upper triangle (strict lower part zero) or a
            mapping ``{(i, j): value}`` where each entry adds ``value * x_i * x_j``
            (``i == j``: a linear term). Stored symmetric float64, read-only.
        offset: constant added to every energy.
        k: cardinality ``sum(x) == k``; None for an unconstrained QUBO.
        labels: optional variable labels (str or int), one per variable.
        metadata: JSON-serialisable provenance (layer, indices, step, scaling, ...).
        n: number of variables, only needed for a mapping with unused trailing variables.
        symmetrize: accept any square matrix and use (Q + Q^T) / 2.
        source: where the data came from, used in error messages.
    """

    __slots__ = ("_Q", "_offset", "_k", "_labels", "_metadata")

    def __init__(
        self,
        Q: np.ndarray | Sequence[Sequence[float]] | Mapping[tuple[int, int], float],
        offset: float = 0.0,
        k: int | None = None,
        *,
        labels: Sequence[Hashable] | None = None,
        metadata: Mapping[str, Any] | None = None,
        n: int | None = None,
        symmetrize: bool = False,
        source: str = "problem",
    ) -> None:
        if isinstance(Q, Mapping):
            q = _matrix_from_mapping(Q, n, source)
        else:
            try:
                a = np.array(Q, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{source}: Q is not a numeric matrix ({exc})") from None
            if a.ndim == 2 and a.shape == (0, 0):
                raise InputError(f"{source}: Q is empty; a problem needs at least one variable")
            q = _symmetric_from_matrix(a, source, symmetrize)
            if n is not None and n != q.shape[0]:
                raise InputError(f"{source}: n={n} does not match Q of shape {q.shape}")
        if q.shape[0] == 0:
            raise InputError(f"{source}: a problem needs at least one variable")
        try:
            off = float(offset)
        except (TypeError, ValueError):
            raise InputError(f"{source}: offset must be a number, got {offset!r}") from None
        if not math.isfinite(off):
            raise InputError(f"{source}: offset is {off}; it must be finite")
        with np.errstate(over="ignore"):
            span = float(np.abs(q).sum()) + abs(off)
        if not math.isfinite(span):
            raise InputError(f"{source}: coefficients so large that energies overflow float64 "
                             "(sum of |Q_ij| and |offset| is inf); scale Q down")
        size = q.shape[0]
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise InputError(f"{source}: k must be an integer or None, got {k!r}")
            k = int(k)
            if not 0 <= k <= size:
                raise InputError(f"{source}: k={k} is out of range; need 0 <= k <= n={size}")
        if labels is not None:
            if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
                raise InputError(f"{source}: labels must be a sequence, got {labels!r:.60}")
            # numpy scalars become Python ones, so every writer can store them.
            labels = tuple(_plain(lab) for lab in labels)
            if len(labels) != size:
                raise InputError(f"{source}: {len(labels)} labels for {size} variables")
            try:
                unique = len(set(labels)) == size
            except TypeError:
                raise InputError(f"{source}: variable labels must be hashable") from None
            if not unique:
                raise InputError(f"{source}: variable labels must be unique")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InputError(
                f"{source}: metadata must be a JSON object (a mapping), got "
                f"{type(metadata).__name__}"
            )
        meta = dict(metadata or {})
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: metadata must be JSON-serialisable ({exc})") from None
        q.setflags(write=False)
        self._Q = q
        self._offset = off
        self._k = k
        self._labels = labels
        self._metadata = meta

    # ------------------------------------------------------------------ accessors
    @property
    def Q(self) -> np.ndarray:
        """Symmetric (n, n) float64, read-only."""
        return self._Q

    @property
    def offset(self) -> float:
        return self._offset

    @property
    def k(self) -> int | None:
        return self._k

    @property
    def labels(self) -> tuple[Hashable, ...] | None:
        return self._labels

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the provenance dict."""
        return json.loads(json.dumps(self._metadata))

    @property
    def n(self) -> int:
        return self._Q.shape[0]

    @property
    def is_constrained(self) -> bool:
        """True when the problem carries a cardinality k (Σx = k)."""
        return self._k is not None

    def replace(self, **changes: Any) -> "Problem":
        """A new Problem with some fields changed (Q, offset, k, labels, metadata)."""
        fields = dict(
            Q=self._Q, offset=self._offset, k=self._k, labels=self._labels, metadata=self._metadata
        )
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"replace() got unknown fields: {sorted(unknown)}")
        fields.update(changes)
        return Problem(**fields)

    def __repr__(self) -> str:
        k = "None" if self._k is None else str(self._k)
        return f"Problem(n={self.n}, k={k}, offset={self._offset:g})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Problem):
            return NotImplemented
        return (
            self._k == other._k
            and self._offset == other._offset
            and self._labels == other._labels
            and self._metadata == other._metadata
            and np.array_equal(self._Q, other._Q)
        )

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ energies
    def _as_states(self, X: np.ndarray, what: str) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 0 or X.shape[-1] != self.n:
            raise InputError(f"{what}: expected {self.n} variables, got shape {X.shape}")
        if not np.all((X == 0) | (X == 1)):
            raise InputError(f"{what}: entries must be 0 or 1")
        return X.astype(np.float64)

    def energy(self, x: np.ndarray) -> float:
        """x @ Q @ x + offset for one binary vector x of shape (n,)."""
        v = self._as_states(x, "energy(x)")
        if v.ndim != 1:
            raise InputError(f"energy(x): x must have shape ({self.n},), got {v.shape}")
        return float(v @ self._Q @ v + self._offset)

    def energies(self, X: np.ndarray) -> np.ndarray:
        """Energies of a batch X of shape (m, n); returns shape (m,) float64."""
        V = self._as_states(X, "energies(X)")
        if V.ndim != 2:
            raise InputError(f"energies(X): X must have shape (m, {self.n}), got {V.shape}")
        return np.einsum("mi,mi->m", V @ self._Q, V) + self._offset

    def is_feasible(self, x: np.ndarray) -> bool:
        """True when x is binary of length n and satisfies the cardinality (if any)."""
        x = np.asarray(x)
        if x.shape != (self.n,) or not np.all((x == 0) | (x == 1)):
            return False
        return self._k is None or int(x.sum()) == self._k

    # ------------------------------------------------------------------ conversions
    def feasible_point(self) -> np.ndarray:
        """A cheap feasible assignment (int8, (n,)): the k smallest diagonal entries."""
        x = np.zeros(self.n, dtype=np.int8)
        if self._k is None:
            x[np.diag(self._Q) < 0] = 1
        else:
            x[np.argsort(np.diag(self._Q), kind="stable")[: self._k]] = 1
        return x

    def energy_lower_bound(self) -> float:
        """A valid lower bound L <= energy(x) for every binary x.

        energy(x) - offset = sum_i x_i (Q_ii + sum_{j != i} Q_ij x_j)
                          >= sum_i min(0, Q_ii + sum_{j != i} min(0, Q_ij)).
        """
        neg = np.minimum(self._Q, 0.0)
        row_neg = neg.sum(axis=1) - np.diag(neg)
        return float(np.minimum(0.0, np.diag(self._Q) + row_neg).sum() + self._offset)

    def default_penalty(self) -> float:
        """A penalty weight P that makes every infeasible x cost more than the optimum.

        Two valid bounds; the smaller one is used, times 1.01, plus 1e-9:

        * flip bound: one flip of variable i changes the energy by at most
          M_i = |Q_ii| + 2 sum_{j != i} |Q_ij|, at any state. An x with
          |sum(x) - k| = d >= 1 reaches a feasible y in d flips, so
          energy(x) + P d^2 >= energy(y) - d M + P d^2 > energy(y) >= optimum
          whenever P > M = max_i M_i.
        * range bound: with y any feasible point and L the lower bound of
          `energy_lower_bound`, energy(x) + P >= L + P > energy(y) whenever
          P > energy(y) - L.
        """
        if self._k is None:
            return 0.0
        absq = np.abs(self._Q)
        flip = float((2.0 * absq.sum(axis=1) - np.diag(absq)).max())
        gap = max(self.energy(self.feasible_point()) - self.energy_lower_bound(), 0.0)
        return 1.01 * min(flip, gap) + 1e-9

    def to_qubo(self, penalty: float | None = None) -> tuple["Problem", "PenaltyInverter"]:
        """The penalty QUBO ``x Q x + offset + P (sum(x) - k)^2`` and its way back.

        With ``penalty=None`` the weight of `default_penalty` is used, which provably
        makes every infeasible assignment cost more than the best feasible one. An
        unconstrained problem comes back unchanged (P = 0).
        Returns ``(qubo, inverter)``; ``inverter(x)`` maps a QUBO answer back (the
        variables are the same) and ``inverter.is_feasible(x)`` checks it.
        """
        if self._k is None:
            return self, PenaltyInverter(self, 0.0)
        try:
            p = self.default_penalty() if penalty is None else float(penalty)
        except (TypeError, ValueError):
            raise InputError(f"penalty must be a finite number >= 0, got {penalty!r}") from None
        if not math.isfinite(p) or p < 0:
            raise InputError(f"penalty must be a finite number >= 0, got {penalty!r}")
        n, k = self.n, self._k
        q = self._Q + p * np.ones((n, n))
        q[np.diag_indices(n)] -= 2.0 * k * p
        meta = self.metadata
        meta["penalty"] = {"weight": p, "k": k}
        qubo = Problem(q, self._offset + p * k * k, None, labels=self._labels, metadata=meta)
        return qubo, PenaltyInverter(self, p)

    def to_ising(self) -> IsingModel:
        """(h, J, offset) with s = 2x - 1, equal energies on every state.

        Uses the QUBO form: for a constrained problem call `to_qubo` first (the
        cardinality is not part of the Ising energy).
        """
        q = self._Q
        d = np.diag(q)
        off_sum = q.sum(axis=1) - d
        h = d / 2.0 + off_sum / 2.0
        # 2 Q_ij x_i x_j (i < j) = Q_ij (1 + s_i + s_j + s_i s_j) / 2
        J = np.triu(q, 1) / 2.0
        offset = self._offset + d.sum() / 2.0 + (q.sum() - d.sum()) / 4.0
        return IsingModel(h=h, J=J, offset=float(offset))

    @classmethod
    def from_ising(
        cls, h: np.ndarray, J: np.ndarray, offset: float = 0.0, k: int | None = None
    ) -> "Problem":
        """The QUBO of an Ising model (s = 2x - 1); J may be full or upper triangular. A
        diagonal J_ii s_i s_i = J_ii is a constant, added to the offset."""
        try:
            h = np.asarray(h, dtype=float)
            J = np.asarray(J, dtype=float)
        except (TypeError, ValueError):
            raise InputError("from_ising: h and J must be numeric arrays") from None
        if h.ndim != 1:
            raise InputError(f"from_ising: h must have shape (n,), got {h.shape}")
        n = h.shape[0]
        if J.shape != (n, n):
            raise InputError(f"from_ising: J must have shape ({n}, {n}), got {J.shape}")
        offset = float(offset) + float(np.trace(J))
        Ju = np.triu(J, 1) + np.tril(J, -1).T
        # s_i s_j = 4 x_i x_j - 2 x_i - 2 x_j + 1 ; s_i = 2 x_i - 1
        q = 2.0 * (Ju + Ju.T)
        lin = 2.0 * h - 2.0 * (Ju.sum(axis=1) + Ju.sum(axis=0))
        q[np.diag_indices(n)] += lin
        const = float(offset) - h.sum() + Ju.sum()
        return cls(q, const, k)


@dataclass(frozen=True)
class PenaltyInverter:
    """Maps answers of a penalty QUBO back to the constrained problem."""

    original: Problem
    penalty: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.original.n:
            raise InputError(f"expected {self.original.n} variables, got shape {x.shape}")
        if not np.all((x == 0) | (x == 1)):
            raise InputError("entries must be 0 or 1")
        return x.astype(np.int8)

    def is_feasible(self, x: np.ndarray) -> bool:
        return self.original.is_feasible(x)
