"""Feature and target normalization with statistics accumulated from training data."""

from __future__ import annotations

import torch
from torch import nn

from gndesign.errors import ConfigError


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


class PerSystemStatistics:
    """Normalization statistics of a model (an ``nn.Module`` mixin) that serves several systems:
    pooled over all of them, and per trained system its own.

    Dynamic inputs and targets take each trained system's own statistics: pooled, one system's
    scale would hide another's inputs (the swimmers' actuator forces, std 2.5e-4 N m, against
    cheetah's 42 N m, normalized to ~1e-5) and weigh its errors (cheetah's hinge accelerations spread
    10x wider than cartpole's). Static input features and globals (masses, geometry, timestep,
    gravity: what tells the systems apart) stay pooled. A system added later (zero-shot) takes the
    pooled statistics or borrows a trained system's own (:meth:`borrow_statistics`). Modules:
    ``node_norm``, ``edge_norm``, ``global_norm``, ``target_norm[group]`` (pooled),
    ``system_input_norm[key][node|edge]``, ``system_target_norm[key][group]`` (per system).
    """

    def init_statistics(self, systems: list[str], sizes: dict[str, int], static_width: dict[str, int],
                        target_groups: list[str], target_size: int, std_epsilon: float,
                        edge_target_widths: dict[str, int] | None = None) -> None:
        """``edge_target_widths``: per trained system, the width of its targets per edge and slot
        (``model.edge_target_stats``: statistics of each edge's own), or None."""
        def norms(widths: dict[str, int]) -> nn.ModuleDict:
            return nn.ModuleDict({k: Normalizer(w, std_epsilon) for k, w in widths.items()})

        self.node_norm, self.edge_norm, self.global_norm = (Normalizer(sizes[k], std_epsilon)
                                                            for k in ("node", "edge", "global"))
        self.target_norm = norms({g: target_size for g in target_groups})
        self._stat_keys = {name: f"s{i}" for i, name in enumerate(systems)}  # names may hold dots
        self._borrowed: dict[str, str] = {}  # untrained system -> the trained system whose statistics it uses
        self._static_width = static_width
        self.system_input_norm = nn.ModuleDict({k: norms({n: sizes[n] for n in static_width})
                                                for k in self._stat_keys.values()})
        self.system_target_norm = nn.ModuleDict({k: norms({g: target_size for g in target_groups})
                                                 for k in self._stat_keys.values()})
        if edge_target_widths is not None:
            self.system_edge_target_norm = nn.ModuleDict({self._stat_keys[s]: Normalizer(w, std_epsilon)
                                                          for s, w in edge_target_widths.items()})
        self.register_load_state_dict_pre_hook(self._pooled_stats_for_old_checkpoints)

    def _pooled_stats_for_old_checkpoints(self, module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
        """A ``load_state_dict`` pre-hook (torch passes the module too). A checkpoint written before
        per-system statistics normalizes every system with the pooled ones: copy them in, so it
        predicts exactly as before."""
        pairs = [(f"system_target_norm.{{}}.{g}", f"target_norm.{g}") for g in self.target_norm]
        pairs += [(f"system_input_norm.{{}}.{k}", f"{k}_norm") for k in self._static_width]
        for key in self._stat_keys.values():
            for own, pooled in pairs:
                for buf in ("count", "sum", "sumsq"):
                    new, old = f"{prefix}{own.format(key)}.{buf}", f"{prefix}{pooled}.{buf}"
                    if new not in state_dict and old in state_dict:
                        state_dict[new] = state_dict[old].clone()

    def _stats_key(self, system: str) -> str | None:
        return self._stat_keys.get(self.statistics_source(system))

    def input_stats(self, system: str, like: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"node" | "edge" | "global": (mean, std)}`` of ``system``'s inputs."""
        out = {"node": self.node_norm.stats(like), "edge": self.edge_norm.stats(like),
               "global": self.global_norm.stats(like)}
        key = self._stats_key(system)
        if key is not None:
            own = self.system_input_norm[key]
            for k, w in self._static_width.items():
                (pm, ps), (om, os) = out[k], own[k].stats(like)
                out[k] = (torch.cat([pm[:w], om[w:]]), torch.cat([ps[:w], os[w:]]))
        return out

    def target_norms(self, system: str) -> nn.ModuleDict:
        """``{group: Normalizer}`` of ``system``'s targets."""
        key = self._stats_key(system)
        return self.target_norm if key is None else self.system_target_norm[key]

    def borrow_statistics(self, system: str, source: str | None) -> None:
        """Normalize ``system``, which the model was not trained on, with the dynamic input and per-type
        target statistics of the trained system ``source`` (None: the pooled ones). A model trained
        on several systems learned each in its own units; the pooled statistics are none of them."""
        if system in self._stat_keys:
            raise ConfigError(f"{system!r} was trained on: it keeps its own statistics")
        if source is not None and source not in self._stat_keys:
            raise ConfigError(f"cannot normalize {system!r} with the statistics of {source!r}: the model was trained "
                              f"on {', '.join(self._stat_keys)}; name one of them, 'nearest' or 'pooled'")
        self._borrowed.pop(system, None)
        if source is not None:
            self._borrowed[system] = source

    def adopt_statistics(self, system: str, statistics: str, distance) -> None:
        """Choose the statistics of ``system`` if the model was not trained on it: ``statistics`` is
        "pooled", a trained system's name, or "nearest": those of the trained system with the
        smallest ``distance(name)`` (any sortable value, or None where it does not compare); pooled
        if none compares."""
        if system in self._stat_keys:
            return
        if statistics == "nearest":
            near = [(d, name) for name in self._stat_keys if (d := distance(name)) is not None]
            statistics = min(near)[1] if near else "pooled"
        self.borrow_statistics(system, None if statistics == "pooled" else statistics)

    def statistics_source(self, system: str) -> str | None:
        """The trained system whose statistics ``system`` uses (itself if trained; None: pooled)."""
        return system if system in self._stat_keys else self._borrowed.get(system)

    @torch.no_grad()
    def accumulate_inputs(self, system: str, inputs: dict[str, torch.Tensor]) -> None:
        """Add ``{"node" | "edge" | "global": features}`` of ``system`` to the statistics."""
        for k, x in inputs.items():
            getattr(self, f"{k}_norm").accumulate(x)
            if system in self._stat_keys and k in self._static_width:
                self.system_input_norm[self._stat_keys[system]][k].accumulate(x)

    def edge_target_stats(self, system: str, used: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(mean, std)`` shaped like ``used [E, slots]`` of a trained ``system``'s targets per edge and
        slot (``model.edge_target_stats``); slots not ``used``: 0 and 1."""
        mean, std = self.system_edge_target_norm[self._stat_keys[system]].stats(like)
        return mean.view(used.shape).where(used, 0.0), std.view(used.shape).where(used, 1.0)

    @torch.no_grad()
    def accumulate_edge_targets(self, system: str, y: torch.Tensor) -> None:
        """Add ``y [B, E, slots]`` to a trained ``system``'s per-edge statistics, if the model keeps them."""
        if hasattr(self, "system_edge_target_norm") and system in self._stat_keys:
            self.system_edge_target_norm[self._stat_keys[system]].accumulate(y.reshape(y.shape[0], -1))

    @torch.no_grad()
    def accumulate_targets(self, system: str, group: str, y: torch.Tensor) -> None:
        self.target_norm[group].accumulate(y)
        if system in self._stat_keys:
            self.system_target_norm[self._stat_keys[system]][group].accumulate(y)
