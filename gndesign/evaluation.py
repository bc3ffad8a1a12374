"""Evaluating forward models on held-out episodes: one-step and rollout errors, and a plot.

Errors are measured against the ground-truth MuJoCo states:

* ``one_step_loss``: the training loss (normalized units) with no input noise;
* ``qpos_rmse[h]``: root-mean-square generalized-coordinate error after ``h`` steps of an open-loop
  rollout under the recorded actions (tangent-space difference, so quaternions are handled);
* ``body_pos_error[h]``: mean Euclidean error of the bodies' centres of mass after ``h`` steps [m]
  (centres of mass, not frame origins: a pendulum's frame origin sits on its hinge and never moves).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from gndesign.dataset import TrajectoryDataset
from gndesign.errors import GndesignError
from gndesign.kinematics import differentiate_qpos, forward_kinematics
from gndesign.simulator import ForwardModel, Transitions
from gndesign.tree import PARAM_KEYS


def _episode_tensors(ds: TrajectoryDataset, episodes: np.ndarray, dtype=torch.float32) -> dict:
    return {"qpos": torch.as_tensor(ds.qpos[episodes], dtype=dtype),
            "qvel": torch.as_tensor(ds.qvel[episodes], dtype=dtype),
            "action": torch.as_tensor(ds.action[episodes], dtype=dtype),
            "params": {k: torch.as_tensor(ds.params[k][episodes], dtype=dtype) for k in PARAM_KEYS}}


@torch.no_grad()
def rollout_errors(model: ForwardModel, ds: TrajectoryDataset, episodes: np.ndarray,
                   horizons: list[int], starts_per_episode: int = 4) -> dict:
    """Open-loop rollout errors at each horizon, averaged over episodes and start times.

    Returns ``{"qpos_rmse": {h: ...}, "body_pos_error": {h: ...}, "finite": {h: bool}}``.
    """
    H = max(horizons)
    if H > ds.steps:
        raise GndesignError(f"horizon {H} exceeds the episodes' {ds.steps} steps: lower --horizons")
    d = _episode_tensors(ds, episodes)
    tree = model.tree(ds.system)
    n_starts = max(1, min(starts_per_episode, ds.steps - H + 1))
    start_times = np.linspace(0, ds.steps - H, n_starts).round().astype(int)
    sq_q = {h: [] for h in horizons}
    pos = {h: [] for h in horizons}
    finite = dict.fromkeys(horizons, True)
    for t0 in start_times:
        q_pred, v_pred = model.rollout(d["qpos"][:, t0], d["qvel"][:, t0], d["action"][:, t0:t0 + H],
                                       ds.system, d["params"])
        for h in horizons:
            qp, qt = q_pred[:, h], d["qpos"][:, t0 + h]
            ok = torch.isfinite(qp).all(dim=1)
            finite[h] &= bool(ok.all())
            diff = differentiate_qpos(tree, qt.double(), qp.double(), 1.0)
            sq_q[h].append(diff.pow(2).mean(1))
            xp = forward_kinematics(tree, qp.double()).xipos[:, 1:]
            xt = forward_kinematics(tree, qt.double()).xipos[:, 1:]
            pos[h].append((xp - xt).norm(dim=-1).mean(1))
    return {
        "qpos_rmse": {h: float(torch.cat(sq_q[h]).mean().sqrt()) for h in horizons},
        "body_pos_error": {h: float(torch.cat(pos[h]).mean()) for h in horizons},
        "finite": finite,
    }


@torch.no_grad()
def one_step_loss(model: ForwardModel, ds: TrajectoryDataset, episodes: np.ndarray, chunk: int = 8192) -> float:
    """The normalized one-step loss over every transition of the given episodes (no noise)."""
    d = _episode_tensors(ds, episodes)
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
    out.update(rollout_errors(model, ds, episodes, list(horizons)))
    return out


@torch.no_grad()
def plot_rollout(model: ForwardModel, ds: TrajectoryDataset, episode: int, horizon: int,
                 path: str | Path) -> Path:
    """Predicted vs ground-truth generalized coordinates of one episode, saved as a PNG."""
    from gndesign.plotting import pyplot, save_figure

    plt = pyplot()
    d = _episode_tensors(ds, np.array([episode]))
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
