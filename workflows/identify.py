"""System identification at the application level: a checkpoint and observed trajectories (a
trajectory dataset, e.g. from ``gndesign generate`` or a robot's logs written with
:func:`gndesign.datasets.trajectories.write_dataset`) in, estimated physical parameters out."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from gndesign.checkpoints import load_model, resolve_checkpoint
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import GndesignError
from gndesign.identify import KEEP, Observed, check_keep, identify, parse_groups
from gndesign.io import atomic_write_json, check_finite, check_output

log = logging.getLogger("gndesign")


def load_observations(ds: TrajectoryDataset, model, episodes: list[int] | None = None,
                      seconds: float | None = None) -> tuple[Observed, list[int], int]:
    """``(observations, episodes, steps)``: the first ``seconds`` of each of ``episodes`` (default:
    all) of the dataset ``ds``; refuses data of another system than ``model``'s, of another control
    timestep, or with no transition."""
    data = ds.path
    if ds.system not in model.systems:
        raise GndesignError(f"--data {data}: observations of system {ds.system!r}, but the model knows "
                            f"{sorted(model.systems)}: observe the system the model was trained on")
    dt = float(model.builder(ds.system).control_timestep)
    if not math.isclose(ds.control_timestep, dt, rel_tol=1e-9):
        raise GndesignError(f"--data {data}: control timestep {ds.control_timestep:g} s, the model steps "
                            f"{dt:g} s: record the observations at the model's control timestep")
    n = ds.qpos.shape[0]
    episodes = list(range(n)) if episodes is None else list(episodes)
    bad = [e for e in episodes if not 0 <= e < n]
    if bad or not episodes:
        raise GndesignError(f"--episodes: {data} has episodes 0-{n - 1}, got {bad[0] if bad else 'none'}")
    T = ds.action.shape[1]
    if seconds is not None:
        if not (math.isfinite(seconds) and seconds > 0):
            raise GndesignError(f"--seconds must be a positive number, got {seconds}")
        T = min(T, int(round(seconds / dt)))
    if T < 1:
        raise GndesignError(f"--data {data}: {seconds} s of observations is length zero at the control timestep "
                            f"{dt:g} s: give at least one control step")
    obs = Observed.from_episodes(ds.qpos[episodes, :T + 1], ds.qvel[episodes, :T + 1], ds.action[episodes, :T],
                                 dtype=torch.float64)
    return obs, episodes, T


def identify_system(model: str, data: str, params: str | list[str] | None = None, restarts: int = 4,
                    episodes: list[int] | None = None, seconds: float | None = None, prior: float = 1e-4,
                    iterations: int = 30, seed: int = 0, out: str | None = None, overwrite: bool = False,
                    keep: float | None = None) -> dict:
    """Estimate the physical parameters ``params`` (``mass``, ``damping``, ``gear``; default mass and
    damping) of the system observed in ``data`` through the learned ``model`` (see
    :func:`gndesign.identify.identify`). When the observed episodes share stored parameters (data
    generated in simulation), each estimate comes with its ``truth`` and relative ``error``."""
    groups = parse_groups(params)
    keep = check_keep(KEEP if keep is None else keep)
    ckpt = resolve_checkpoint(model)
    check_output(out, inputs=[ckpt, data], overwrite=overwrite, what="--out")
    ds = TrajectoryDataset.load(data)
    try:
        learned, _ = load_model(ckpt, "forward", system=ds.system, mjcf_sha256=ds.mjcf_sha256)
    except GndesignError as e:
        raise GndesignError(f"--data {data}: {e}") from None
    learned = learned.double()  # float64: the estimates are then limited by the model, not by rounding
    obs, episodes, T = load_observations(ds, learned, episodes, seconds)
    torch.manual_seed(seed)
    result = identify(learned, ds.system, obs, groups, restarts=restarts, iterations=iterations, prior=prior, seed=seed,
                      keep=keep)
    shared = all(np.allclose(v[episodes], v[episodes[0]], rtol=1e-12, atol=0) for v in ds.params.values())
    for p in result["parameters"]:
        if shared:
            truth = float(np.asarray(ds.params[p["key"]][episodes[0]])[p["index"]].reshape(-1)[0])
            p["truth"], p["error"] = truth, (p["estimate"] - truth) / truth
    check_finite([p["estimate"] for p in result["parameters"]], "the identified parameters",
                 "the observations may be far outside what the model was trained on")
    result.update(system=ds.system, model=str(model), data=str(data), episodes=episodes, steps=T,
                  seconds=T * float(ds.control_timestep), groups=groups, prior=prior, keep=keep)
    for p in result["parameters"]:
        log.info("%s: %.6g (nominal %.6g, +-%.2g%% curvature, +-%.2g%% restarts)%s", p["name"], p["estimate"],
                 p["nominal"], 100 * p["std"], 100 * p["spread"],
                 f", truth {p['truth']:.6g} ({100 * p['error']:+.2f}%)" if "truth" in p else "")
    if out:
        atomic_write_json(out, result)
    return result
