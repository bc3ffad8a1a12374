"""Evaluating forward models on held-out episodes: one-step and rollout errors, and a plot.

Errors are measured against the ground-truth MuJoCo states:

* ``one_step_loss``: the training loss (normalized units) with no input noise;
* ``qpos_rmse[h]``: root-mean-square generalized-coordinate error after ``h`` steps of an open-loop
  rollout under the recorded actions (tangent-space difference, so quaternions are handled);
* ``body_pos_error[h]``: mean Euclidean error of the bodies' centres of mass after ``h`` steps [m]
  (centres of mass, not frame origins: a pendulum's frame origin sits on its hinge and never moves).

The measuring functions return per-episode arrays (:func:`rollout_errors`, :func:`body_position_errors`);
the numbers reported (means over episodes) are computed from them (:func:`summarize_rollout_errors`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from gndesign.datasets.params import PARAM_KEYS
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import GndesignError
from gndesign.kinematics import differentiate_qpos, forward_kinematics
from gndesign.simulator import ForwardModel, Transitions
from gndesign.tree import KinematicTree


def episode_tensors(ds: TrajectoryDataset, episodes: np.ndarray, dtype=torch.float32) -> dict:
    """Episodes of ``ds`` as tensors: ``qpos [E, T+1, nq]``, ``qvel [E, T+1, nv]``,
    ``action [E, T, nu]`` and ``params`` (``{key: [E, ...]}``, keys of :data:`PARAM_KEYS`)."""
    return {"qpos": torch.as_tensor(ds.qpos[episodes], dtype=dtype),
            "qvel": torch.as_tensor(ds.qvel[episodes], dtype=dtype),
            "action": torch.as_tensor(ds.action[episodes], dtype=dtype),
            "params": {k: torch.as_tensor(ds.params[k][episodes], dtype=dtype) for k in PARAM_KEYS}}


def body_distance(tree: KinematicTree, q_pred: torch.Tensor, q_true: torch.Tensor) -> torch.Tensor:
    """``[B]`` mean Euclidean distance [m] between the bodies' centres of mass (world body
    excluded) in ``q_pred [B, nq]`` and in ``q_true [B, nq]`` (computed in float64)."""
    xp = forward_kinematics(tree, q_pred.double()).xipos[:, 1:]
    xt = forward_kinematics(tree, q_true.double()).xipos[:, 1:]
    return (xp - xt).norm(dim=-1).mean(1)


@torch.no_grad()
def rollout_errors(model: ForwardModel, ds: TrajectoryDataset, episodes: np.ndarray,
                   horizons: list[int], starts_per_episode: int = 4) -> dict:
    """Per-episode open-loop rollout errors at each horizon, averaged over start times.

    ``starts_per_episode`` rollouts of ``max(horizons)`` steps start at evenly spaced times of each
    episode, under the recorded actions. Returns float64 numpy arrays over the ``E`` episodes and
    the horizons (in the given order): ``{"horizons": [h, ...], "qpos_mse": [E, Hn]`` (mean
    squared tangent-space coordinate error), ``"body_pos_error": [E, Hn]`` [m],
    ``"finite": [E, Hn]`` (bool: every start's prediction finite)``}``; see
    :func:`summarize_rollout_errors`.
    """
    H = max(horizons)
    if H > ds.steps:
        raise GndesignError(f"horizon {H} exceeds the episodes' {ds.steps} steps: lower --horizons")
    d = episode_tensors(ds, episodes)
    tree = model.tree(ds.system)
    n_starts = max(1, min(starts_per_episode, ds.steps - H + 1))
    start_times = np.linspace(0, ds.steps - H, n_starts).round().astype(int)
    shape = (len(start_times), len(episodes), len(horizons))
    sq, pos, finite = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=bool)
    for s, t0 in enumerate(start_times):
        q_pred, _ = model.rollout(d["qpos"][:, t0], d["qvel"][:, t0], d["action"][:, t0:t0 + H],
                                  ds.system, d["params"])
        for j, h in enumerate(horizons):
            qp, qt = q_pred[:, h], d["qpos"][:, t0 + h]
            finite[s, :, j] = torch.isfinite(qp).all(dim=1).numpy()
            sq[s, :, j] = differentiate_qpos(tree, qt.double(), qp.double(), 1.0).pow(2).mean(1).numpy()
            pos[s, :, j] = body_distance(tree, qp, qt).numpy()
    return {"horizons": list(horizons), "qpos_mse": sq.mean(0), "body_pos_error": pos.mean(0),
            "finite": finite.all(0)}


def summarize_rollout_errors(errors: dict) -> dict:
    """The reported numbers of :func:`rollout_errors`' per-episode arrays, means over episodes:
    ``{"qpos_rmse": {h: ...}, "body_pos_error": {h: ...}, "finite": {h: bool}}``."""
    hs = errors["horizons"]
    return {
        "qpos_rmse": {h: float(np.sqrt(errors["qpos_mse"][:, j].mean())) for j, h in enumerate(hs)},
        "body_pos_error": {h: float(errors["body_pos_error"][:, j].mean()) for j, h in enumerate(hs)},
        "finite": {h: bool(errors["finite"][:, j].all()) for j, h in enumerate(hs)},
    }


@torch.no_grad()
def body_position_errors(model: ForwardModel, ds: TrajectoryDataset, episodes: np.ndarray, horizon: int) -> np.ndarray:
    """``[E, horizon+1]`` per-episode body-position errors [m] (:func:`body_distance`) at every step
    of open-loop rollouts from each episode's first state under the recorded actions."""
    d = episode_tensors(ds, np.asarray(episodes))
    tree = model.tree(ds.system)
    q, _ = model.rollout(d["qpos"][:, 0], d["qvel"][:, 0], d["action"][:, :horizon], ds.system, d["params"])
    E = q.shape[0]
    truth = d["qpos"][:, :horizon + 1]
    return body_distance(tree, q.reshape(E * (horizon + 1), -1), truth.reshape(E * (horizon + 1), -1)).reshape(
        E, horizon + 1).numpy()


@torch.no_grad()
def one_step_loss(model: ForwardModel, ds: TrajectoryDataset, episodes: np.ndarray, chunk: int = 8192) -> float:
    """The normalized one-step loss over every transition of the given episodes (no noise)."""
    d = episode_tensors(ds, episodes)
    n_ep, T = d["action"].shape[:2]
    flat = {k: d[k][:, :-1].reshape(n_ep * T, -1) for k in ("qpos", "qvel")}
    nxt = {k: d[k][:, 1:].reshape(n_ep * T, -1) for k in ("qpos", "qvel")}
    act = d["action"].reshape(n_ep * T, -1)
    params = {k: v.repeat_interleave(T, 0) for k, v in d["params"].items()}
    total, n = 0.0, 0
    for s in range(0, n_ep * T, chunk):
        sl = slice(s, s + chunk)
        b = Transitions(ds.system, flat["qpos"][sl], flat["qvel"][sl], act[sl], {k: v[sl] for k, v in params.items()},
                        nxt["qpos"][sl], nxt["qvel"][sl])
        m = b.qpos.shape[0]
        total += float(model.loss([b])) * m
        n += m
    return total / max(n, 1)


def evaluate(model: ForwardModel, ds: TrajectoryDataset, episodes: np.ndarray | None = None,
             horizons: tuple[int, ...] = (1, 10, 50, 100)) -> dict:
    """All metrics for a dataset (every episode if ``episodes`` is None)."""
    episodes = np.arange(ds.num_episodes) if episodes is None else np.asarray(episodes)
    horizons = [h for h in horizons if h <= ds.steps] or [ds.steps]
    out = {"system": ds.system, "episodes": int(len(episodes)), "horizons": list(horizons),
           "one_step_loss": one_step_loss(model, ds, episodes)}
    out.update(summarize_rollout_errors(rollout_errors(model, ds, episodes, list(horizons))))
    return out


@torch.no_grad()
def plot_rollout(model: ForwardModel, ds: TrajectoryDataset, episode: int, horizon: int,
                 path: str | Path) -> Path:
    """Predicted vs ground-truth generalized coordinates of one episode, saved as a PNG."""
    from gndesign.plotting import pyplot, save_figure

    plt = pyplot()
    d = episode_tensors(ds, np.array([episode]))
    H = min(horizon, ds.steps)
    q_pred, _ = model.rollout(d["qpos"][:, 0], d["qvel"][:, 0], d["action"][:, :H], ds.system, d["params"])
    tree = model.tree(ds.system)
    t = np.arange(H + 1) * ds.control_timestep
    n = tree.nq
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= n:
            ax.axis("off")
            continue
        ax.plot(t, d["qpos"][0, : H + 1, i].numpy(), "k-", lw=1.5, label="MuJoCo")
        ax.plot(t, q_pred[0, :, i].numpy(), "C1--", lw=1.5, label="learned")
        ax.set_title(f"qpos[{i}]", fontsize=9)
        ax.set_xlabel("time [s]", fontsize=8)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{ds.system}: episode {episode}, {H}-step open-loop rollout")
    fig.tight_layout()
    return save_figure(fig, path)
