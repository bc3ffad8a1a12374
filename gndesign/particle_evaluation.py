"""Evaluating particle simulators on held-out episodes: open-loop position errors from rest, and a plot.

:func:`particle_rollout_errors` returns per-episode errors at every frame; the numbers reported
(means over episodes at some frames and over the whole rollout) come from
:func:`summarize_position_errors` and :func:`summarize_particle_errors`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gndesign.datasets.particles import ParticleDataset, scene_mismatch
from gndesign.errors import GndesignError
from gndesign.particles import ParticleSimulator


@torch.no_grad()
def particle_rollout_errors(model: ParticleSimulator, dataset: ParticleDataset,
                            episodes: Sequence[int] | np.ndarray | None = None, batch: int = 16) -> dict[str, Any]:
    """Per-episode open-loop rollout errors from each episode's first frame (particles at rest).

    Args:
        episodes: the ``E`` episodes to evaluate (default: all).
        batch: episodes rolled out at once.

    Returns:
        ``{"position_error": [E, T+1]`` mean |x_pred - x_true| over particles [m] at each frame,
        ``"baseline_error": [E, T+1]`` the same for particles that stay where they start,
        ``"episodes": [E]`` the episode indices``}`` (float64 numpy arrays; the rollout runs in
        float32).
    """
    diff = scene_mismatch(model.scene, dataset.scene)
    if diff:
        raise GndesignError(f"the model was trained on another scene than {dataset.path} ({'; '.join(diff)})")
    eps = np.arange(len(dataset)) if episodes is None else np.asarray(episodes, dtype=np.int64)
    errs, base = [], []
    model.eval()
    for i in range(0, len(eps), batch):
        idx = eps[i:i + batch]
        truth = torch.as_tensor(dataset.positions[idx], dtype=torch.float32)
        obs = torch.as_tensor(dataset.obstacle[idx], dtype=torch.float32)
        pred = model.rollout(truth[:, 0], obs, dataset.steps)
        errs.append((pred - truth).norm(dim=-1).mean(-1).double().numpy())  # [b, T+1]
        base.append((truth[:, :1] - truth).norm(dim=-1).mean(-1).double().numpy())
    return {"position_error": np.concatenate(errs), "baseline_error": np.concatenate(base), "episodes": eps}


def default_horizons(steps: int) -> list[int]:
    """``T // 4, T // 2, T`` (T: the episodes' frames minus one, which the design tasks roll out)."""
    return sorted({max(1, steps // 4), max(1, steps // 2), steps})


def summarize_position_errors(error: np.ndarray, horizons: Sequence[int]) -> dict[str, Any]:
    """Means over episodes of per-episode errors ``error [E, T+1]``: ``{"position_error": {h: at
    frame h}, "mean_position_error": averaged over frames 1..T, "finite": bool}``."""
    return {"position_error": {h: float(error[:, h].mean()) for h in horizons},
            "mean_position_error": float(error[:, 1:].mean()), "finite": bool(np.isfinite(error).all())}


def summarize_particle_errors(errors: dict[str, Any], horizons: Sequence[int] | None = None) -> dict[str, Any]:
    """The reported numbers of :func:`particle_rollout_errors`' arrays (``gndesign evaluate``'s keys).

    Args:
        horizons: frames at which to report errors (default: :func:`default_horizons`).

    Returns:
        ``{"position_error": {h: mean over episodes at frame h}, "mean_position_error": the same
        averaged over frames 1..T, "baseline_error": {h: ...}, "baseline_mean_error": (particles
        that stay where they start), "finite": bool, "episodes": count, "steps": T}``.
    """
    err = errors["position_error"]
    T = err.shape[1] - 1
    horizons = default_horizons(T) if horizons is None else sorted({int(h) for h in horizons})
    if horizons[0] < 1 or horizons[-1] > T:
        raise GndesignError(f"horizons must lie in 1..{T} (the episodes' length), got {horizons}")
    model = summarize_position_errors(err, horizons)
    base = summarize_position_errors(errors["baseline_error"], horizons)
    return {"position_error": model["position_error"], "mean_position_error": model["mean_position_error"],
            "baseline_error": base["position_error"], "baseline_mean_error": base["mean_position_error"],
            "finite": model["finite"], "episodes": len(err), "steps": T}


@torch.no_grad()
def plot_particle_rollout(model: ParticleSimulator, dataset: ParticleDataset, episode: int, path: str | os.PathLike,
                          frames: Sequence[int] | None = None) -> Path:
    """Side-by-side snapshots of ground truth and the learned rollout of one episode (PNG)."""
    from gndesign.plotting import pyplot, save_figure

    plt = pyplot()
    T = dataset.steps
    frames = list(frames) if frames is not None else [0, T // 3, 2 * T // 3, T]
    ep = dataset.episode(episode)
    truth = torch.as_tensor(ep["positions"], dtype=torch.float32)
    obs = torch.as_tensor(ep["obstacle"], dtype=torch.float32)
    pred = model.rollout(truth[None, 0], obs[None], T)[0]
    s = dataset.scene
    top = float(max(truth[..., 1].max(), obs[:, 1].max())) + 2 * s["particle_radius"]
    fig, axes = plt.subplots(2, len(frames), figsize=(3 * len(frames), 4.5), squeeze=False, sharex=True, sharey=True)
    for row, (name, pos) in enumerate((("ground truth", truth), ("learned", pred))):
        for col, f in enumerate(frames):
            ax = axes[row][col]
            ax.scatter(pos[f, :, 0], pos[f, :, 1], s=6, c="tab:blue" if row == 0 else "tab:orange")
            ax.plot(obs[:, 0], obs[:, 1], "k-", lw=2)
            ax.axhline(s["floor"], color="gray")
            for xw in (s["x_min"], s["x_max"]):
                ax.axvline(xw, color="gray")
            ax.set_xlim(s["x_min"], s["x_max"])
            ax.set_ylim(s["floor"] - s["particle_radius"], top)
            ax.set_aspect("equal")
            ax.set_title(f"{name}, frame {f}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
