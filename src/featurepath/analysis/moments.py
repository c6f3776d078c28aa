"""Column moments accumulated chunk by chunk, so a test over a million features never needs the
whole ``[observations, features]`` matrix in memory.

Per column: the finite count, the mean, the sum of squared deviations (M2) and the range. A
chunk's own moments are merged into the running ones with the pairwise update of Chan, Golub &
LeVeque (1979), which stays accurate where the textbook ``Σx² − n·mean²`` cancels; the range
keeps ``stats.welch_t_matrix``'s rule for constant columns. Tensors may live on any device (the
accumulators stay where the data are; only the final result is copied to the host).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from featurepath.analysis.stats import _REL_TOL, MatrixResult, _welch_from_stats

__all__ = ["ColumnMoments"]


@dataclass
class ColumnMoments:
    """Running finite count, mean, M2, min and max of each of ``m`` columns (float64)."""

    n: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    @classmethod
    def empty(cls, m: int, device: torch.device | str | None = None) -> ColumnMoments:
        def z() -> torch.Tensor:
            return torch.zeros(m, dtype=torch.float64, device=device)

        return cls(z(), z(), z(), torch.full((m,), float("inf"), dtype=torch.float64,
                                             device=device),
                   torch.full((m,), float("-inf"), dtype=torch.float64, device=device))

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` [k, m]; NaNs and infinities are skipped column by column."""
        if x.shape[0] == 0:
            return
        if bool(torch.isfinite(x).all()):  # the usual case: fewer passes over the chunk
            lo, hi = torch.aminmax(x, dim=0)
            x = x.to(torch.float64)
            nb = torch.full_like(self.n, float(x.shape[0]))
            mb = x.mean(0)
            m2b = (x - mb).square_().sum(0)
        else:
            finite = torch.isfinite(x)
            x = x.to(torch.float64)
            nb = finite.sum(0).to(torch.float64)
            mb = torch.where(finite, x, 0.0).sum(0) / nb.clamp(min=1)
            m2b = torch.where(finite, x - mb, 0.0).square().sum(0)
            lo = torch.where(finite, x, float("inf")).amin(0)
            hi = torch.where(finite, x, float("-inf")).amax(0)
        n = self.n + nb
        delta = mb - self.mean
        w = torch.where(n > 0, nb / n.clamp(min=1), 0.0)
        self.mean = self.mean + delta * w
        self.m2 = self.m2 + m2b + delta.square() * self.n * w
        self.n = n
        self.lo = torch.minimum(self.lo, lo.to(torch.float64))
        self.hi = torch.maximum(self.hi, hi.to(torch.float64))

    def numpy(self) -> tuple[NDArray[np.float64], ...]:
        """``(n, mean, m2, lo, hi)`` on the host."""
        return tuple(t.cpu().numpy() for t in (self.n, self.mean, self.m2, self.lo, self.hi))


def welch_t_from_moments(a: tuple[NDArray[np.float64], ...],
                         b: tuple[NDArray[np.float64], ...]) -> MatrixResult:
    """``welch_t_matrix`` from per-column ``(n, mean, m2, lo, hi)`` of each group (the sums a
    streaming pass keeps, see ``analysis.moments``) instead of the data themselves; the same
    degeneracy and constancy rules."""
    return _welch_from_stats(_moment_stats(*a), _moment_stats(*b))


def _moment_stats(n, mean, m2, lo, hi):
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, mean, np.nan)
        var = m2 / (n - 1)
        scale = np.maximum(np.abs(hi), np.abs(lo))
        const = (n == 0) | (hi - lo <= _REL_TOL * scale) | (var == 0)
    var = np.where(const & (n >= 2), 0.0, var)
    return n, mean, var, const
