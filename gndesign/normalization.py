"""Feature and target normalization with statistics accumulated from training data."""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """Per-feature standardization ``(x - mean) / std`` with statistics accumulated from data.

    Statistics are float64 running sums (buffers, so they live in checkpoints and follow the
    module's device). ``std`` is clamped to at least ``std_epsilon`` so constant features (one-hot
    columns, a fixed timestep) neither blow up nor divide by zero.

    Args:
        size: the feature width (the last dimension of the inputs).
        std_epsilon: the smallest standard deviation used.
    """

    def __init__(self, size: int, std_epsilon: float = 1e-3):
        super().__init__()
        self.size = size
        self.std_epsilon = std_epsilon
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sum", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("sumsq", torch.zeros(size, dtype=torch.float64))
        self._cache: dict = {}

    def stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` in ``like``'s dtype and device, recomputed only when the statistics
        change (accumulate or load_state_dict bump the buffers' versions): rollouts call this every step."""
        key = (like.dtype, like.device, self.count._version, self.sum._version, self.sumsq._version,
               self.count.data_ptr())
        if self._cache.get("key") != key:
            self._cache = {"key": key, "stats": (self.mean.to(like), self.std.to(like))}
        return self._cache["stats"]

    @torch.no_grad()
    def accumulate(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add ``x [..., size]`` (rows where ``mask [...]`` is true, if given) to the statistics."""
        x = x.detach().reshape(-1, self.size).to(torch.float64)
        if mask is not None:
            x = x[mask.reshape(-1)]
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.sumsq += (x * x).sum(0)

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count.clamp_min(1)

    @property
    def std(self) -> torch.Tensor:
        var = (self.sumsq / self.count.clamp_min(1) - self.mean**2).clamp_min(0)
        return var.sqrt().clamp_min(self.std_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.count == 0:
            raise RuntimeError("Normalizer has no statistics: accumulate() training data first")
        mean, std = self.stats(x)
        return (x - mean) / std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        mean, std = self.stats(y)
        return y * std + mean

    def extra_repr(self) -> str:
        return f"size={self.size}, count={int(self.count)}"
