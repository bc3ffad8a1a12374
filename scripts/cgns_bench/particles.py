"""The benchmark on the obstacle particle scene: rollout errors of both models and the C-GNS's
iteration sweep (sections 1 and 2), and the penetration of an obstacle never seen in training
(section 3)."""

from __future__ import annotations

import time

import numpy as np

from .data import scene_of
from .measures import set_iterations, sweep_summary, violation_summary, weighted_specs
from .protocol import PENETRATION_TARGET


def particle_errors(model, ds, episodes=None):
    """Per-episode position errors ``[E, T+1]`` of open-loop rollouts from rest (the library's)."""
    from gndesign.particle_evaluation import particle_rollout_errors

    return particle_rollout_errors(model, ds, episodes)["position_error"]


def particle_horizons(T: int) -> list[int]:
    return sorted({h for h in (10, T // 4, T // 2, T) if 1 <= h <= T})


def particle_ratio(cg: dict, fwd: dict, hs: list[int]) -> dict:
    return {"mean_position_error": cg["mean_position_error"] / fwd["mean_position_error"],
            **{f"frame {h}": cg["position_error"][h] / fwd["position_error"][h] for h in hs}}


def eval_particle_errors(ctx: dict) -> dict:
    """Sections 1 (every validation episode) and 2 (the first ``sweep_episodes``) on the particle scene."""
    from gndesign.checkpoints import load_model
    from gndesign.datasets.particles import ParticleDataset
    from gndesign.particle_evaluation import summarize_position_errors

    ds = ParticleDataset.load(ctx["data"]["valid"])
    hs = particle_horizons(ds.steps)
    fwd, _ = load_model(ctx["forward"], "particles", scene=ds.scene)
    cg, _ = load_model(ctx["cgns"], "cgns-particles", scene=ds.scene)
    trained = cg.solver.iterations
    t0 = time.perf_counter()
    ef = particle_errors(fwd, ds)
    base = np.linalg.norm(ds.positions[:, :1] - ds.positions, axis=-1).mean(-1)
    out = {"episodes": len(ds), "steps": ds.steps, "horizons": hs, "forward": summarize_position_errors(ef, hs),
           "baseline_mean_error": float(base[:, 1:].mean()), "trained_iterations": trained, "sweep": {}}
    out["forward"]["rollout_seconds"] = time.perf_counter() - t0
    set_iterations(cg, trained)
    t0 = time.perf_counter()
    ec = particle_errors(cg, ds)
    out["cgns"] = {**summarize_position_errors(ec, hs), "rollout_seconds": time.perf_counter() - t0}
    out["ratio"] = particle_ratio(out["cgns"], out["forward"], hs)
    if ctx.get("forward_steps"):  # the forward model trained for as many optimizer steps as the C-GNS
        fs, blob = load_model(ctx["forward_steps"], "particles", scene=ds.scene)
        t0 = time.perf_counter()
        out["forward_steps"] = {**summarize_position_errors(particle_errors(fs, ds), hs), "train_steps": blob["step"],
                                "rollout_seconds": time.perf_counter() - t0}
        out["ratio_steps"] = particle_ratio(out["cgns"], out["forward_steps"], hs)
    S = min(ctx["sweep_episodes"], len(ds))
    out["sweep_episodes"] = S
    per = {}
    for n in ctx["sweep"]:
        t0 = time.perf_counter()
        if n == trained:
            e = ec[:S]
        else:
            set_iterations(cg, n)
            e = particle_errors(cg, ds, np.arange(S))
        per[n] = e[:, 1:].mean(1)
        out["sweep"][n] = {**summarize_position_errors(e, hs), "rollout_seconds": time.perf_counter() - t0,
                           "per_episode_mean_error": per[n].tolist()}
    out["sweep_summary"] = sweep_summary(per)
    return out


def penetration(model, constraints, traj, radius: float, free=None) -> dict:
    """``violation_report`` of a particle rollout ``[B, T+1, N, 2]`` in metres and particle radii,
    plus: the fraction of balls that ever violate the constraints (``entering``) and that come
    within half a radius of violating them (``touching``), the mean violation of the violating
    ball-frames, how far the balls fell (``mean_drop_m``), and with ``free`` (the rollout without
    constraints) how far the constraints moved the balls before they first came near them
    (``disturbance_radii``: mean |x - x_free| over the frames before each ball first comes within
    half a radius of violating them in ``free``: what the constraints should leave alone)."""
    from gndesign.constraint_evaluation import grown_terms, mean_before_first, particle_violation
    from gndesign.constraint_sets import bind_constraints, constraint_terms

    context = model.constraint_context(traj.shape[2])
    rep = violation_summary(constraints, context, model.constraint_frames(traj))
    bound = bind_constraints(constraints, context)
    v = particle_violation(constraint_terms(bound), traj)
    near = particle_violation(grown_terms(bound, 0.5 * radius), traj) > 0
    inside = v > 0
    rep.update({"max_radii": rep["max"] / radius, "mean_radii": rep["mean"] / radius,
                "mean_inside_radii": float(v[inside].mean()) / radius if inside.any() else 0.0,
                "entering": float(inside.any(1).double().mean()), "touching": float(near.any(1).double().mean()),
                "final_frame_max_radii": float(v[:, -1].max()) / radius,
                "mean_drop_m": float((traj[:, 0, :, 1] - traj[:, -1, :, 1]).mean())})
    if free is not None:
        near_free = particle_violation(grown_terms(bound, 0.5 * radius), free) > 0  # [B, T+1, N]
        rep["disturbance_radii"] = mean_before_first((traj - free).norm(dim=-1).double(), near_free) / radius
    return rep


def held_back(run: dict, forward: dict) -> bool:
    """The penetration target: at most 10% of the radius, with the balls reaching the obstacle (at
    least half as many touch it as the forward simulator sends into it), not stopped short of it."""
    return run["max_radii"] <= PENETRATION_TARGET and run["touching"] >= 0.5 * forward["entering"]


def eval_particle_obstacle(ctx: dict) -> dict:
    """Section 3 on the particle scene: penetration of an obstacle never seen in training."""
    import torch

    from envs.obstacle.scene import design_fk, initial_positions
    from gndesign.checkpoints import load_model
    from gndesign.datasets.particles import ParticleDataset
    from gndesign.io import atomic_write_npz
    from gndesign.specs import parse_constraints

    ds = ParticleDataset.load(ctx["data"]["valid"])
    cfg = scene_of(ds)
    fwd, _ = load_model(ctx["forward"], "particles", scene=ds.scene)
    cg, _ = load_model(ctx["cgns"], "cgns-particles", scene=ds.scene)
    judge = parse_constraints([ctx["obstacle"]])
    r = float(cfg.particle_radius)
    L = ctx["layouts"]
    init = torch.as_tensor(np.stack([initial_positions(cfg, s) for s in range(L)]), dtype=torch.float32)
    obstacle = design_fk(torch.as_tensor(cfg.default_design())[None], cfg).float().expand(L, -1, -1)
    T = cfg.frames
    out = {"layouts": L, "seeds": list(range(L)), "frames": T, "particles": cfg.n_particles, "particle_radius": r,
           "design": "the scene's default design (hanging clear of the stream)", "constraint": ctx["obstacle"],
           "trained_iterations": cg.solver.iterations, "runs": {}}
    trajs = {}

    def run(name, model, meta, **kw):
        t0 = time.perf_counter()
        with torch.no_grad():
            trajs[name] = model.rollout(init, obstacle, T, **kw)
        seconds = time.perf_counter() - t0
        rep = penetration(cg, judge, trajs[name], r, free=trajs.get("cgns") if "constraints" in kw else None)
        out["runs"][name] = {**meta, **rep, "rollout_seconds": seconds}

    run("forward", fwd, {"model": "forward"})
    set_iterations(cg, 0)
    run("cgns", cg, {"model": "cgns", "iterations": cg.solver.iterations})
    for w, spec in weighted_specs(ctx["obstacle"], ctx["weights"]):
        for n in ctx["constraint_iterations"]:
            run(f"cgns+constraint w={w:g} it={n}", cg, {"model": "cgns", "spec": spec, "weight": w, "iterations": n},
                constraints=parse_constraints([spec]), iterations=n)
    for run_ in out["runs"].values():
        if "spec" in run_:
            run_["held_back"] = held_back(run_, out["runs"]["forward"])
    # The figure's arrays (layout 0), for the main process.
    atomic_write_npz(ctx["arrays"], {"init": init[0].numpy(), "obstacle": obstacle[0].numpy(),
                                     **{k: v[0].numpy() for k, v in trajs.items()}})
    return out
