"""The benchmark on cartpole: rollout errors of both models and the C-GNS's iteration sweep on the
test set (sections 1 and 2), and a wall the cart may not pass (section 3)."""

from __future__ import annotations

import time

import numpy as np

from .measures import set_iterations, sweep_summary, violation_summary, weighted_specs
from .protocol import CARTPOLE_HORIZONS


def eval_cartpole_errors(ctx: dict) -> dict:
    """Sections 1 and 2 on cartpole (the test set)."""
    from gndesign.checkpoints import load_model
    from gndesign.datasets.trajectories import TrajectoryDataset
    from gndesign.evaluation import body_position_errors, evaluate

    ds = TrajectoryDataset.load(ctx["data"]["test"])
    hs = [h for h in CARTPOLE_HORIZONS if h <= ds.steps]
    fwd, _ = load_model(ctx["forward"], "forward", system=ds.system)
    cg, _ = load_model(ctx["cgns"], "cgns-articulated", system=ds.system)
    out = {"episodes": ds.num_episodes, "horizons": hs, "trained_iterations": cg.solver.iterations, "sweep": {}}
    t0 = time.perf_counter()
    out["forward"] = evaluate(fwd, ds, None, tuple(hs))
    out["forward"]["seconds"] = time.perf_counter() - t0
    set_iterations(cg, 0)
    t0 = time.perf_counter()
    out["cgns"] = evaluate(cg, ds, None, tuple(hs))
    out["cgns"]["seconds"] = time.perf_counter() - t0
    out["ratio"] = {f"h={h}": out["cgns"]["body_pos_error"][h] / out["forward"]["body_pos_error"][h] for h in hs}
    if ctx.get("forward_steps"):  # the forward model trained for as many optimizer steps as the C-GNS
        fs, blob = load_model(ctx["forward_steps"], "forward", system=ds.system)
        t0 = time.perf_counter()
        out["forward_steps"] = evaluate(fs, ds, None, tuple(hs))
        out["forward_steps"].update(train_steps=blob["step"], seconds=time.perf_counter() - t0)
        out["ratio_steps"] = {f"h={h}": out["cgns"]["body_pos_error"][h] / out["forward_steps"]["body_pos_error"][h]
                              for h in hs}
    H = max(hs)
    per = {}
    for n in ctx["sweep"]:
        set_iterations(cg, n)
        t0 = time.perf_counter()
        e = body_position_errors(cg, ds, np.arange(ds.num_episodes), H)
        per[n] = e[:, 1:].mean(1)
        out["sweep"][n] = {"body_pos_error": {h: float(e[:, h].mean()) for h in hs},
                           "mean_body_pos_error": float(per[n].mean()), "finite": bool(np.isfinite(e).all()),
                           "rollout_seconds": time.perf_counter() - t0, "per_episode_mean_error": per[n].tolist()}
    out["sweep_horizon"] = H
    out["sweep_summary"] = sweep_summary(per)
    return out


def eval_cartpole_wall(ctx: dict) -> dict:
    """Section 3 on cartpole: a wall the cart may not pass, on test episodes that cross it."""
    import torch

    from gndesign.checkpoints import load_model
    from gndesign.constraint_evaluation import body_violation, grown_terms, mean_before_first
    from gndesign.constraint_sets import bind_constraints, constraint_terms
    from gndesign.datasets.trajectories import TrajectoryDataset
    from gndesign.evaluation import episode_tensors
    from gndesign.kinematics import forward_kinematics
    from gndesign.specs import parse_constraints

    ds = TrajectoryDataset.load(ctx["data"]["test"])
    fwd, _ = load_model(ctx["forward"], "forward", system=ds.system)
    cg, _ = load_model(ctx["cgns"], "cgns-articulated", system=ds.system)
    tree = cg.tree(ds.system)
    judge = parse_constraints([ctx["wall"]])
    bound = bind_constraints(judge, cg.constraint_context(ds.system))
    terms, near_terms = constraint_terms(bound), grown_terms(bound, 0.05)
    H = min(ctx["wall_steps"], ds.steps)
    d = episode_tensors(ds, np.arange(ds.num_episodes))
    truth = body_violation(terms, tree, d["qpos"][:, :H + 1]).numpy()  # MuJoCo's violation [E, H+1]
    chosen = np.flatnonzero((truth[:, 0] == 0) & (truth.max(1) >= ctx["cross_by"]))[:ctx["wall_episodes"]]
    out = {"constraint": ctx["wall"], "steps": H, "cross_by": ctx["cross_by"], "test_episodes": ds.num_episodes,
           "episodes": chosen.tolist(), "trained_iterations": cg.solver.iterations, "runs": {}}
    if len(chosen) == 0:
        out["note"] = "no test episode starts short of the wall and crosses it: change --wall or --cross-by"
        return out
    e = episode_tensors(ds, chosen)
    args = (e["qpos"][:, 0], e["qvel"][:, 0], e["action"][:, :H], ds.system, e["params"])
    rollouts = {}

    def report(name, q, v, meta, seconds=None):
        rollouts[name] = q
        rep = violation_summary(judge, cg.constraint_context(ds.system), cg.constraint_frames(q, v, ds.system))
        # Reaching the wall (within 5 cm) in how many episodes; with constraints, how far they moved the
        # bodies before the unconstrained C-GNS's cart first came within 10 cm of the wall.
        rep["reaching"] = float((body_violation(near_terms, tree, q) > 0).any(1).double().mean())
        if "spec" in meta:
            free = rollouts["cgns"]
            near_free = body_violation(grown_terms(bound, 0.1), tree, free) > 0
            E, T1 = q.shape[:2]
            xq = forward_kinematics(tree, q.reshape(E * T1, -1)).xpos.reshape(E, T1, -1, 3)
            xf = forward_kinematics(tree, free.reshape(E * T1, -1)).xpos.reshape(E, T1, -1, 3)
            dist = (xq - xf)[:, :, 1:].norm(dim=-1).mean(-1).double()
            rep["disturbance_m"] = mean_before_first(dist, near_free)
        if seconds is not None:
            rep["rollout_seconds"] = seconds
        out["runs"][name] = {**meta, **rep}

    report("mujoco", e["qpos"][:, :H + 1], e["qvel"][:, :H + 1], {"model": "mujoco"})
    with torch.no_grad():
        t0 = time.perf_counter()
        q, v = fwd.rollout(*args)
        report("forward", q, v, {"model": "forward"}, time.perf_counter() - t0)
        set_iterations(cg, 0)
        t0 = time.perf_counter()
        q, v = cg.rollout(*args)
        report("cgns", q, v, {"model": "cgns", "iterations": cg.solver.iterations}, time.perf_counter() - t0)
        for w, spec in weighted_specs(ctx["wall"], ctx["weights"]):
            for n in ctx["constraint_iterations"]:
                t0 = time.perf_counter()
                q, v = cg.rollout(*args, constraints=parse_constraints([spec]), iterations=n)
                report(f"cgns+constraint w={w:g} it={n}", q, v,
                       {"model": "cgns", "spec": spec, "weight": w, "iterations": n}, time.perf_counter() - t0)
    return out
