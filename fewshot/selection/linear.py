"""The posterior of a Bayesian linear model over batched candidate vectors, in factor form.

Model: ``y = theta^T f + eps`` with ``eps`` of variance ``noise`` and prior ``theta ~ N(0, I / ridge)``.
After observing picks the posterior covariance is ``Sigma = I / ridge - U U^T``, one column
``u = Sigma f / sqrt(noise + f^T Sigma f)`` per pick (a rank-one down-date, Sherman-Morrison),
so Sigma is never formed nor inverted: a pick costs ``O(d t)`` for u and one ``O(M d)`` product
with the candidates.

GO uses it with ``noise > 0`` (its gains are ``cov^2 / (noise + var)``); DPP greedy MAP with
``noise = 0`` on features ``r_i x_i``, where ``f^T Sigma f`` is the conditional variance of the
kernel ``L = diag(r) X X^T diag(r)`` given the picks (Chen et al.'s incremental Cholesky).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import CandidateVectors, batch_picks


class LinearPosterior:
    """Posterior over the candidates of b independent rows (the ``(b, M)`` layout of
    :class:`CandidateVectors`), each row with its own picks.

    A candidate's feature is its vector times ``weights[row, col]`` (default 1). Kept per row:
    ``variances`` ``f^T Sigma f`` of every candidate, and with ``targets`` (one vector q per row)
    ``covariances`` ``q^T Sigma f`` and ``target_variances`` ``q^T Sigma q``. ``condition(rows,
    cols)`` observes candidate ``cols[i]`` in row ``rows[i]`` (other rows are unchanged). The
    target variance is down-dated at once; the ``O(M d)`` pass over the candidates waits for the
    next read, so a last pick that is never read costs nothing. ``floor`` bounds
    ``noise + f^T Sigma f`` from below (needed with ``noise = 0`` once a candidate is in the span).

    Against explicit inversion, ``Sigma = (ridge I + F_S^T F_S / noise)^-1``:

    >>> rng = np.random.default_rng(0); pool = rng.normal(size=(6, 3)); q = rng.normal(size=(2, 3))
    >>> post = LinearPosterior(CandidateVectors(pool, np.tile(np.arange(6), (2, 1))), ridge=2.0, noise=0.5, targets=q)
    >>> post.condition(np.array([0, 1]), np.array([4, 1])); post.condition(np.array([0]), np.array([2]))
    >>> sigma = np.linalg.inv(2.0 * np.eye(3) + pool[[4, 2]].T @ pool[[4, 2]] / 0.5)  # row 0 picked 4, 2
    >>> bool(np.allclose(post.variances[0], np.einsum("id,de,ie->i", pool, sigma, pool)))
    True
    >>> bool(np.allclose(post.covariances[0], pool @ sigma @ q[0]))
    True
    >>> bool(np.isclose(post.target_variances[0], q[0] @ sigma @ q[0]))
    True
    """

    def __init__(self, vectors: CandidateVectors, ridge: float = 1.0, noise: float = 0.0, *,
                 weights: np.ndarray | None = None, targets: np.ndarray | None = None,
                 floor: float = 0.0, keep_projections: bool = False) -> None:
        if ridge <= 0 or noise < 0 or floor < 0 or noise + floor <= 0:
            raise InputError("LinearPosterior needs ridge > 0, noise >= 0, floor >= 0 and noise + floor > 0")
        self.vectors, self.ridge, self.noise, self.floor = vectors, ridge, noise, floor
        self.weights = weights
        var = vectors.sq_norms() / ridge
        self._var = var if weights is None else weights ** 2 * var
        self._cov = self._tvar = None
        if targets is not None:
            self._cov = self._weighted(vectors.dot(targets) / ridge)
            self._tvar = np.einsum("bd,bd->b", targets, targets) / ridge
        self._factors: list[np.ndarray] = []  # u_t, (b, d) each
        self._projections: list[np.ndarray] | None = [] if keep_projections else None
        self._pending: tuple | None = None

    def _weighted(self, values: np.ndarray) -> np.ndarray:
        return values if self.weights is None else values * self.weights

    @property
    def variances(self) -> np.ndarray:
        """``(b, M)``: ``f^T Sigma f`` of every candidate."""
        self._catch_up()
        return self._var

    @property
    def covariances(self) -> np.ndarray:
        """``(b, M)``: ``q^T Sigma f`` of every candidate with its row's target."""
        if self._cov is None:
            raise InputError("LinearPosterior was built without targets")
        self._catch_up()
        return self._cov

    @property
    def target_variances(self) -> np.ndarray:
        """``(b,)``: ``q^T Sigma q`` of each row's target (always current, no catch-up needed)."""
        if self._tvar is None:
            raise InputError("LinearPosterior was built without targets")
        return self._tvar

    @property
    def factors(self) -> list[np.ndarray]:
        """The ``u_t`` so far, ``(b, d)`` each (zero in rows that did not pick at step t)."""
        self._catch_up()
        return self._factors

    @property
    def projections(self) -> list[np.ndarray]:
        """``u_t . f`` for every candidate, ``(b, M)`` each (only with ``keep_projections``)."""
        if self._projections is None:
            raise InputError("LinearPosterior was built without keep_projections")
        self._catch_up()
        return self._projections

    def condition(self, rows: np.ndarray, cols: np.ndarray) -> None:
        """Observe candidate ``cols[i]`` of row ``rows[i]`` (rows distinct); other rows keep their state."""
        self._catch_up()
        idx, picked, live = batch_picks(len(self._var), rows, cols)
        den = np.maximum(self.noise + self._var[idx, picked], self.floor)
        scale = np.where(live, 1.0 / np.sqrt(den), 0.0).astype(self._var.dtype)
        wq = None
        if self._cov is not None:
            wq = self._cov[idx, picked] * scale  # q . u
            self._tvar = self._tvar - wq ** 2
        self._pending = (idx, picked, scale, wq)

    def _catch_up(self) -> None:
        """Apply the last pick's down-date: u = Sigma f* * scale, w = u . f for every candidate."""
        if self._pending is None:
            return
        idx, picked, scale, wq = self._pending
        f = self.vectors.at(idx, picked)  # (b, d)
        if self.weights is not None:
            f = f * self.weights[idx, picked][:, None]
        u = f / self.ridge
        for prev in self._factors:
            u -= np.einsum("bd,bd->b", prev, f)[:, None] * prev
        u *= scale[:, None]  # rows that did not pick get u = 0
        w = self._weighted(self.vectors.dot(u))  # (b, M): the one pass over the candidates
        self._factors.append(u)
        if self._projections is not None:
            self._projections.append(w.copy())
        if wq is not None:
            self._cov -= wq[:, None] * w
        np.square(w, out=w)
        self._var -= w
        self._pending = None
