"""C-GNS benchmark: the constraint-based solver vs the forward GN simulator, solver iterations, unseen obstacles.

Writes ``results/cgns.json``, ``results/cgns.md`` (with the machine: cores, torch version, threads)
and ``results/cgns.png`` (particles held back by an obstacle never seen in training).

    python scripts/bench_cgns.py                      # the protocol below (about 50 min on 2 cores)
    python scripts/bench_cgns.py --minutes 5          # shorter training budgets
    python scripts/bench_cgns.py --quick --out /tmp/cgns_quick.json   # smoke run (about 2 minutes)

Protocol (issue 6, section 3). Two systems, the obstacle particle scene (``data/obstacle/train`` and
``valid``: 600 and 50 episodes of the default scene, seeds 0 and 1, the recipe of
``scripts/make_pretrained.py``) and cartpole (300 training episodes of 200 steps, seed 0, the recipe
of ``scripts/bench_forward.py``; a separate test set of ``--test-episodes`` episodes, seed 1). On
each, the forward GN simulator and the C-GNS are trained on the same data with the same
architecture and optimizer options, training seed 0 and the same wall-clock budget (``--minutes``
per model, one thread; the two models of a system train at the same time, one core each, so they
see the same machine load). Then:

1. ``errors``: unconstrained open-loop rollout errors of both on held-out episodes: particles from
   rest over the whole episode (the design tasks roll out 150 frames), mean |x_pred - x_true| over
   particles at frames 10, T/4, T/2, T and averaged over frames 1..T (the metric of
   ``gndesign.particle_evaluation``); cartpole body-position and qpos errors after
   1, 10, 50, 100 and 120 steps (120: the swing-up task's planning horizon;
   ``gndesign.evaluation.evaluate``, four start times per episode). Target: C-GNS / forward <= 1.5.
   The C-GNS makes several times fewer optimizer steps in the same time (every step differentiates
   through its unrolled solver), so the forward model is also trained for exactly as many steps as
   the C-GNS made (``<system>-forward-steps``, its learning rate decaying over them) and the ratio
   is reported at equal steps too; the issue's target stays the equal-time one.
2. ``iterations``: the C-GNS's errors with 1, 2, 5, 10, 20 solver iterations per step at test
   time (``--sweep``; trained with ``solver.iterations``, 5), per episode, so that differences are
   paired (particles: the first ``--sweep-episodes`` validation episodes; cartpole: every test
   episode from its first step, under its recorded actions, errors averaged over 120 steps).
   Target: more iterations never worse by more than noise, ``noise`` being the larger of two
   standard errors of the paired per-episode difference and 1% of the error.
3. ``obstacle``: particles released from ``--layouts`` random layouts (seeds 0..L-1, the default
   design) above an obstacle never seen in training (``--obstacle``, a disk in the stream): the
   penetration of the particles' surface into it (``violation_report``, in particle radii) for
   the forward simulator (which knows nothing of it), the C-GNS without the constraint, and the
   C-GNS with it, for each weight in ``--weights`` (unless the spec names one) and each count in
   ``--constraint-iterations``. Target: <= 10% of the radius *with the balls reaching the
   obstacle* (at least half as many balls come within half a radius of it as the forward
   simulator sends into it): a solver that slowed every ball a stiff constraint applies to could
   freeze them in mid-air, which would meet a bare penetration target. Also reported: how far the
   balls fell, and how far the constraint moved them before they first came near the obstacle in
   the unconstrained C-GNS rollout (``disturbance``: what the constraint should leave alone).
   ``wall``: the same on cartpole for a wall the cart may not pass (``--wall``), on the test
   episodes whose MuJoCo trajectory (smooth random actions, the training data's) starts short of
   it and crosses it by at least ``--cross-by`` within ``--wall-steps`` steps; the recorded
   actions are replayed open loop (no numeric target: violation, reaching the wall, disturbance).
4. ``cgns.png``: layout 0 with the forward simulator, the C-GNS without and with the constraint.

Cost (2 cores, one thread per job, two jobs at a time): training takes ``2 x --minutes`` of
wall-clock time (the particle pair, then the cartpole pair) plus a minute or two for the
equal-steps forward models; evaluation about 10-25 min more at the defaults on a shared machine
(the C-GNS particle rollouts dominate: about 0.1 s per solver iteration per frame for 16 episodes
of 100 balls), so about 45-55 min at the default 15 minutes. With ``--workers 1`` (one job at a
time) training takes ``4 x --minutes`` and evaluation about 15-20 min: about 60 min at
``--minutes 10``.

Every training run is kept in ``--work`` (``runs/bench_cgns``; a run without its ``done.json``
was interrupted and is retrained) and every evaluation is cached there as JSON (recomputed when
its settings or checkpoint change); ``--rerun`` retrains everything, ``--reeval`` re-evaluates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gndesign.io import machine_info

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_cgns")

#: The obstacle particle simulator's options (scripts/make_pretrained.py's "obstacle" model),
#: with logging, validation and checkpoints every 100/500/500 steps for minute budgets.
PARTICLE_OPTIONS = ["model.latent_size=64", "model.mlp_hidden_size=64", "model.message_passing_steps=3",
                    "model.radius=3.0", "model.history=5", "train.batch_size=4", "train.vel_noise=0.03",
                    "train.val_fraction=0.05", "train.log_every=100", "train.eval_every=500",
                    "train.checkpoint_every=500"]
#: Cartpole's GN (scripts/bench_forward.py's MODEL["gn"] and its train options).
CARTPOLE_OPTIONS = ["model.latent_size=64", "model.mlp_hidden_size=64", "model.message_passing_steps=2",
                    "train.eval_every=200", "train.log_every=100", "train.checkpoint_every=1000"]
COMMON = ["train.threads=1", "train.seed=0", "train.steps=1000000"]  # the wall-clock budget binds
SOLVER = ["solver.iterations=5"]  # and the solver's defaults (solver.iterations_min)
OBSTACLE = "disk center=0.0,1.2 radius=0.3"
WALL = "wall axis=x upper=0.5 nodes=cart"
CARTPOLE_HORIZONS = (1, 10, 50, 100, 120)
NOISE_SE, NOISE_REL = 2.0, 0.01  # "noise": max(2 paired standard errors, 1% of the error)
RATIO_TARGET, PENETRATION_TARGET = 1.5, 0.10


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def quick_scene() -> dict:
    """The --quick particle scene: 20 balls, 60 frames (enough to fall onto the obstacle)."""
    return {"n_particles": 20, "frames": 60}


def particle_data(args) -> dict[str, str]:
    """The obstacle scene's training and validation sets (generated when missing)."""
    from envs.obstacle.scene import SceneConfig
    from envs.obstacle.simulation import generate_obstacle_dataset

    if args.quick:
        root, scene, splits = Path(args.work) / "data" / "obstacle-quick", SceneConfig(**quick_scene()), \
            {"train": (12, 0), "valid": (4, 1)}
    else:
        root, scene, splits = Path(args.particle_data), SceneConfig(), {"train": (600, 0), "valid": (50, 1)}
    out = {}
    for split, (episodes, seed) in splits.items():
        path = root / split
        if not (path / "meta.json").exists():
            log.info("generating %s (%d episodes, seed %d)", path, episodes, seed)
            generate_obstacle_dataset(scene, path, episodes, seed, workers=args.workers, overwrite=True)
        out[split] = str(path)
    return out


def cartpole_data(args) -> dict[str, str]:
    """Cartpole training data (bench_forward's recipe) and a separate test set."""
    from envs.generate import generate_dataset

    root = Path(args.work) / "data"
    out = {}
    for split, (episodes, seed) in {"train": (24 if args.quick else args.episodes, 0),
                                    "test": (16 if args.quick else args.test_episodes, 1)}.items():
        path = root / f"cartpole-{episodes}x200-s{seed}"
        if not (path / "meta.json").exists():
            generate_dataset("cartpole", episodes=episodes, steps=200, seed=seed, out_dir=path, workers=2,
                             overwrite=True, progress=False)
        out[split] = str(path)
    return out


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def train_job(job: dict) -> dict:
    """Train one model (a worker process, one thread); its ``done.json`` marks it finished."""
    import torch

    torch.set_num_threads(1)
    run = Path(job["run"])
    done = run / "done.json"
    if done.exists():
        finished = json.loads(done.read_text())
        if finished.get("steps") == job.get("steps"):
            return finished
    if run.exists():  # interrupted (a resumed wall-clock budget would restart its clock), or another step budget
        shutil.rmtree(run)
    if job.get("steps"):  # a budget of optimizer steps (the learning rate decays over them), not of time
        overrides = job["options"] + COMMON + [f"train.steps={job['steps']}"]
    else:
        overrides = job["options"] + COMMON + [f"train.minutes={job['minutes']}"]
    t0 = time.time()
    if job["model"] == "cgns":
        from gndesign.config import load_config
        from gndesign.training import train

        cfg = load_config(None, overrides + SOLVER, data=job["data"], cgns=True)
        summary = train(cfg, run, progress=False)
    elif job["system"] == "particles":
        from gndesign.config import as_particle_config, load_config
        from gndesign.training import train

        cfg = as_particle_config(load_config(None, overrides, data=job["data"]))
        summary = train(cfg, run, progress=False)
    else:
        from gndesign.config import load_config
        from gndesign.training import train

        cfg = load_config(None, overrides, data=job["data"])
        summary = train(cfg, run, progress=False)
    out = {"name": job["name"], "system": job["system"], "model": job["model"], "minutes": job["minutes"],
           "steps": job.get("steps"), "wall_seconds": time.time() - t0, "summary": summary, "config": cfg.to_dict(),
           "checkpoint": str(run / "checkpoints" / "latest.pt")}
    from gndesign.io import atomic_write_json

    atomic_write_json(done, out)
    return out


# ----------------------------------------------------------------------------------------------
# Evaluation helpers
# ----------------------------------------------------------------------------------------------


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(path: Path, key: dict, compute, reeval: bool) -> dict:
    """``compute()`` unless ``path`` holds a result for the same ``key`` (settings, checkpoints)."""
    from gndesign.io import atomic_write_json

    fp = _fingerprint(key)
    if path.exists() and not reeval:
        old = json.loads(path.read_text())
        if old.get("fingerprint") == fp:
            return old
    t0 = time.perf_counter()
    res = compute()
    res["fingerprint"], res["seconds"] = fp, time.perf_counter() - t0
    atomic_write_json(path, res)
    return json.loads(path.read_text())  # as a cached one reads (string keys)


def _ckpt_key(path: str) -> list:
    st = Path(path).stat()
    return [path, st.st_size, st.st_mtime_ns]


def set_iterations(model, n: int) -> None:
    """Make every rollout of the (eval-mode) C-GNS use ``n`` solver iterations per step."""
    model.solver.test_iterations = n


def paired_increase(a: np.ndarray, b: np.ndarray) -> dict:
    """``b - a`` (per-episode errors of more and of fewer iterations): mean, its standard error,
    and whether it stays within noise."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    noise = max(NOISE_SE * se, NOISE_REL * float(np.mean(a)))
    return {"increase": float(d.mean()), "relative": float(d.mean() / max(float(np.mean(a)), 1e-12)),
            "paired_se": se, "noise": noise, "within_noise": bool(d.mean() <= noise)}


def sweep_summary(per_episode: dict[int, np.ndarray]) -> dict:
    """Every pair of iteration counts, fewer to more: the largest increase of the error and the
    pair farthest beyond noise (None when every pair got better)."""
    its = sorted(per_episode)
    pairs = []
    for i, n in enumerate(its):
        for m in its[i + 1:]:
            pairs.append({**paired_increase(per_episode[n], per_episode[m]), "from": n, "to": m})
    return {"max_increase": max(pairs, key=lambda p: p["increase"], default=None),
            "worst_vs_noise": max(pairs, key=lambda p: p["increase"] - p["noise"], default=None),
            "all_within_noise": all(p["within_noise"] for p in pairs)}


# ----------------------------------------------------------------------------------------------
# Particles
# ----------------------------------------------------------------------------------------------


def particle_errors(model, ds, episodes=None):
    """Per-episode position errors ``[E, T+1]`` of open-loop rollouts from rest (the library's)."""
    from gndesign.particle_evaluation import particle_rollout_errors

    return particle_rollout_errors(model, ds, episodes)["position_error"]


def particle_horizons(T: int) -> list[int]:
    return sorted({h for h in (10, T // 4, T // 2, T) if 1 <= h <= T})


def _particle_ratio(cg: dict, fwd: dict, hs: list[int]) -> dict:
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
    out["ratio"] = _particle_ratio(out["cgns"], out["forward"], hs)
    if ctx.get("forward_steps"):  # the forward model trained for as many optimizer steps as the C-GNS
        fs, blob = load_model(ctx["forward_steps"], "particles", scene=ds.scene)
        t0 = time.perf_counter()
        out["forward_steps"] = {**summarize_position_errors(particle_errors(fs, ds), hs), "train_steps": blob["step"],
                                "rollout_seconds": time.perf_counter() - t0}
        out["ratio_steps"] = _particle_ratio(out["cgns"], out["forward_steps"], hs)
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


def weighted_specs(spec: str, weights: list[float]) -> list[tuple[float, str]]:
    """``(weight, spec with weight=...)`` for each weight, or ``spec`` alone when it names its own."""
    from gndesign.constraint_sets import constraint_terms
    from gndesign.specs import parse_constraints

    if "weight=" in spec:
        return [(constraint_terms(parse_constraints([spec]))[0].weight, spec)]
    return [(float(w), f"{spec} weight={w:g}") for w in weights]


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
    from gndesign.solver import violation_report

    rep = violation_report(constraints, model.constraint_context(traj.shape[2]), model.constraint_frames(traj))
    rep["mean"] = max((c["mean"] for c in rep["constraints"]), default=0.0)  # of the constraint violated most
    bound = bind_constraints(constraints, model.constraint_context(traj.shape[2]))
    v = particle_violation(constraint_terms(bound), traj)
    near = particle_violation(grown_terms(bound, 0.5 * radius), traj) > 0
    inside = v > 0
    extra = {"max_radii": rep["max"] / radius, "mean_radii": rep["mean"] / radius,
             "mean_inside_radii": float(v[inside].mean()) / radius if inside.any() else 0.0,
             "entering": float(inside.any(1).double().mean()), "touching": float(near.any(1).double().mean()),
             "final_frame_max_radii": float(v[:, -1].max()) / radius,
             "mean_drop_m": float((traj[:, 0, :, 1] - traj[:, -1, :, 1]).mean())}
    if free is not None:
        near_free = particle_violation(grown_terms(bound, 0.5 * radius), free) > 0  # [B, T+1, N]
        extra["disturbance_radii"] = mean_before_first((traj - free).norm(dim=-1).double(), near_free) / radius
    rep.update(extra)
    for c in rep["constraints"]:
        c["per_step_max"] = [round(x, 6) for x in c["per_step_max"]]
    rep["max_radii"] = rep["max"] / radius
    return rep


def held_back(run: dict, forward: dict) -> bool:
    """The penetration target: at most 10% of the radius, with the balls reaching the obstacle (at
    least half as many touch it as the forward simulator sends into it), not stopped short of it."""
    return run["max_radii"] <= PENETRATION_TARGET and run["touching"] >= 0.5 * forward["entering"]


def eval_particle_obstacle(ctx: dict) -> dict:
    """Section 3 on the particle scene: penetration of an obstacle never seen in training."""
    import torch

    from envs.obstacle.scene import SceneConfig, design_fk, initial_positions
    from gndesign.checkpoints import load_model
    from gndesign.datasets.particles import ParticleDataset
    from gndesign.specs import parse_constraints

    ds = ParticleDataset.load(ctx["data"]["valid"])
    cfg = SceneConfig.from_dict({k: v for k, v in ds.scene.items() if k in SceneConfig.__dataclass_fields__})
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
    from gndesign.io import atomic_write_npz

    atomic_write_npz(ctx["arrays"], {"init": init[0].numpy(), "obstacle": obstacle[0].numpy(),
                                     **{k: v[0].numpy() for k, v in trajs.items()}})
    return out


# ----------------------------------------------------------------------------------------------
# Cartpole
# ----------------------------------------------------------------------------------------------


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
    from gndesign.solver import violation_report
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
        rep = violation_report(judge, cg.constraint_context(ds.system), cg.constraint_frames(q, v, ds.system))
        rep["mean"] = max((c["mean"] for c in rep["constraints"]), default=0.0)
        for c in rep["constraints"]:
            c["per_step_max"] = [round(x, 6) for x in c["per_step_max"]]
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


EVALS = {"particle-errors": eval_particle_errors, "particle-obstacle": eval_particle_obstacle,
         "cartpole-errors": eval_cartpole_errors, "cartpole-wall": eval_cartpole_wall}


def eval_job(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    ctx = job["ctx"]
    key = {k: v for k, v in ctx.items() if k not in ("forward", "cgns", "forward_steps", "arrays")}
    key.update(forward=_ckpt_key(ctx["forward"]), cgns=_ckpt_key(ctx["cgns"]),
               forward_steps=_ckpt_key(ctx["forward_steps"]) if ctx.get("forward_steps") else None,
               script=hashlib.sha256(Path(__file__).read_bytes()).hexdigest())  # this code measured it
    return {job["name"]: cached(Path(job["cache"]), key, lambda: EVALS[job["name"]](ctx), job["reeval"])}


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def config_differences(a: dict, b: dict) -> list[str]:
    """Model and train options that differ between two runs' configurations (the C-GNS adds its solver)."""
    diffs = []
    for section in ("data", "model", "train"):
        x, y = a.get(section), b.get(section)
        if isinstance(x, dict) and isinstance(y, dict):
            diffs += [f"{section}.{k}: {x.get(k)} vs {y.get(k)}" for k in sorted(set(x) | set(y))
                      if x.get(k) != y.get(k)]
        elif x != y:
            diffs.append(f"{section}: {x} vs {y}")
    return diffs


def targets(r: dict) -> dict:
    ev = r["eval"]
    t = {}
    for system, e in (("particles", ev.get("particle-errors")), ("cartpole", ev.get("cartpole-errors"))):
        if not e:
            continue
        t[f"{system}: C-GNS error <= 1.5x forward"] = all(v <= RATIO_TARGET for v in e["ratio"].values())
        if "ratio_steps" in e:
            t[f"{system}: C-GNS error <= 1.5x forward at equal optimizer steps (not the issue's target: equal "
              "training budget)"] = all(v <= RATIO_TARGET for v in e["ratio_steps"].values())
        t[f"{system}: more iterations never worse by more than noise"] = e["sweep_summary"]["all_within_noise"]
    po = ev.get("particle-obstacle")
    if po:
        t["particles: the forward simulator passes through the unseen obstacle (max > 10% of the radius)"] = \
            po["runs"]["forward"]["max_radii"] > PENETRATION_TARGET
        for run in ordered_runs(po):
            if "spec" in run:
                t[f"particles: penetration <= 10% of the radius with the balls reaching the obstacle, C-GNS + "
                  f"constraint, weight {run['weight']:g}, {run['iterations']} iterations"] = run["held_back"]
    return t


def ordered_runs(section: dict) -> list[dict]:
    """Ground truth, forward, C-GNS, then the constrained C-GNS by weight and iterations."""
    rank = {"mujoco": 0, "forward": 1}
    runs = list(section["runs"].values())
    return sorted(runs, key=lambda r: (rank.get(r["model"], 2), "spec" in r, r.get("weight", 0),
                                       r.get("iterations", 0)))


def markdown(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    tr = r["training"]
    lines = ["# C-GNS benchmark", "",
             f"Machine: {m['cores']} cores ({m['cpu']}), torch {m['torch']}, one thread per job "
             f"({_jobs(s.get('workers', 2))} at a time); "
             f"Python {m['python']}. Total time {r['total_seconds'] / 60:.1f} min."
             + (" **--quick smoke run: tiny data and budgets, the numbers mean nothing.**" if s["quick"] else ""), "",
             f"Training: the same data, architecture, optimizer options and seed for both models of a system, "
             f"{s['minutes']:g} min of wall-clock time each (particles: {s['particle_minutes']:g} min), one thread; "
             f"the C-GNS unrolls {s['solver_iterations']} solver iterations"
             + (f" (in training a number drawn uniformly from {s['solver']['iterations_min']} to "
                f"{s['solver']['iterations']} for every solve, solver.iterations_min)"
                if s.get("solver", {}).get("iterations_min") else "") + ". "
             + ("The two models of a system trained at the same time on the shared machine. "
                if s.get("workers", 2) > 1 else "One job at a time (the machine's other core was busy with other "
                "work). ")
             + "Equal steps: the forward model trained again for as many optimizer steps as the C-GNS made in "
             "its time (the learning rate decaying over them), to separate the C-GNS's cost per step from its "
             "accuracy per step.", "",
             "| system | model | steps | seconds | final validation loss |", "|---|---|---|---|---|"]
    for j in tr.values():
        sm = j["summary"]
        val = f"{sm['val_loss']:.4g}" if "val_loss" in sm else "-"
        model = f"{j['model']} (equal steps)" if j.get("steps") else j["model"]
        lines.append(f"| {j['system']} | {model} | {sm.get('step', '-')} | {sm.get('seconds', 0):.0f} | {val} |")
    diffs = r.get("config_differences", {})
    if any(diffs.values()):
        lines += ["", "Configuration differences between the two models: "
                  + "; ".join(f"{k}: {', '.join(v)}" for k, v in diffs.items() if v)]
    ev = r["eval"]
    pe, ce = ev.get("particle-errors"), ev.get("cartpole-errors")
    lines += ["", "## 1. Unconstrained rollout error, C-GNS vs forward GN simulator", ""]
    if pe:
        hs = pe["horizons"]
        lines += [f"Particles ({pe['episodes']} validation episodes of {pe['steps']} frames from rest, mean |x_pred - "
                  f"x_true| [m]; particles left where they start: {pe['baseline_mean_error']:.3f} m):", "",
                  "| model | " + " | ".join(f"frame {h}" for h in hs) + " | mean over frames |",
                  "|---|" + "---|" * (len(hs) + 1)]
        rows = [("forward GN (equal time)", pe["forward"])]
        if "forward_steps" in pe:
            rows.append((f"forward GN (equal steps: {pe['forward_steps']['train_steps']})", pe["forward_steps"]))
        rows.append((f"C-GNS ({pe['trained_iterations']} iterations)", pe["cgns"]))
        for name, e in rows:
            lines.append(f"| {name} | " + " | ".join(f"{e['position_error'][str(h)]:.4f}" for h in hs)
                         + f" | {e['mean_position_error']:.4f} |")
        for name, key in (("ratio, equal time", "ratio"), ("ratio, equal steps", "ratio_steps")):
            if key in pe:
                lines.append(f"| **{name}** | " + " | ".join(f"**{pe[key][f'frame {h}']:.2f}**" for h in hs)
                             + f" | **{pe[key]['mean_position_error']:.2f}** |")
        lines.append("")
    if ce:
        hs = ce["horizons"]
        lines += [f"Cartpole ({ce['episodes']} test episodes, open loop under the recorded actions, four start times "
                  "each; body position error [m]):", "",
                  "| model | one-step loss | " + " | ".join(f"h={h}" for h in hs) + " |",
                  "|---|---|" + "---|" * len(hs)]
        rows = [("forward GN (equal time)", ce["forward"])]
        if "forward_steps" in ce:
            rows.append((f"forward GN (equal steps: {ce['forward_steps']['train_steps']})", ce["forward_steps"]))
        rows.append((f"C-GNS ({ce['trained_iterations']} iterations)", ce["cgns"]))
        for name, e in rows:
            lines.append(f"| {name} | {e['one_step_loss']:.4g} | "
                         + " | ".join(f"{e['body_pos_error'][str(h)]:.4f}" for h in hs) + " |")
        for name, key in (("ratio, equal time", "ratio"), ("ratio, equal steps", "ratio_steps")):
            if key in ce:
                lines.append(f"| **{name}** | | " + " | ".join(f"**{ce[key][f'h={h}']:.2f}**" for h in hs) + " |")
        lines.append("")
    lines += ["## 2. Error vs test-time solver iterations (C-GNS)", "",
              "Mean error over the rollout, per episode, averaged. \"Max increase\": the largest increase from fewer "
              f"to more iterations over all pairs; noise = max({NOISE_SE:g} paired standard errors, "
              f"{NOISE_REL:.0%} of the error).", ""]
    for label, e, key in (("particles", pe, "mean_position_error"), ("cartpole", ce, "mean_body_pos_error")):
        if not e:
            continue
        its = [n for n in sorted(e["sweep"], key=int) if int(n) in s["sweep"]]
        mi, wv = e["sweep_summary"]["max_increase"], e["sweep_summary"]["worst_vs_noise"]
        lines += [f"| {label} | " + " | ".join(f"{n} it." for n in its) + " | max increase |",
                  "|---|" + "---|" * (len(its) + 1),
                  "| error [m] | " + " | ".join(f"{e['sweep'][n][key]:.4f}" for n in its)
                  + (f" | {mi['increase']:+.4f} m ({mi['from']} -> {mi['to']} it., {mi['relative']:+.1%}; noise "
                     f"{mi['noise']:.4f}) |" if mi else " | - |"), ""]
        if wv and wv is not mi and (wv["from"], wv["to"]) != (mi["from"], mi["to"]):
            lines += [f"Farthest beyond noise: {wv['from']} -> {wv['to']} iterations, {wv['increase']:+.4f} m "
                      f"(noise {wv['noise']:.4f}).", ""]
    po, cw = ev.get("particle-obstacle"), ev.get("cartpole-wall")
    lines += ["## 3. Test-time constraints the models never saw", ""]
    if po:
        lines += [f"Particles: `{po['constraint']}` in the stream of {po['particles']} balls falling from the source "
                  f"box, {po['layouts']} layouts (seeds 0-{po['layouts'] - 1}), {po['frames']} frames, the default "
                  "design. Penetration of the balls' surface into the obstacle in particle radii: max over balls and "
                  "frames, mean over all ball-frames, mean over the penetrating ones; the fraction of balls that "
                  "ever enter it and that come within half a radius of it (touching); how far the balls fell on "
                  "average; and how far the constraint moved the balls before they first came near the obstacle "
                  "in the unconstrained C-GNS rollout (disturbance: what it should leave alone). Held back: max <= "
                  "10% of the radius with at least half as many balls touching it as the forward simulator sends "
                  "into it.", "",
                  "| rollout | max | mean | mean when inside | entering | touching | mean drop [m] | disturbance "
                  "| held back |", "|---|---|---|---|---|---|---|---|---|"]
        for run in ordered_runs(po):
            dist = f"{run['disturbance_radii']:.3f}" if "disturbance_radii" in run else "-"
            held = ("yes" if run["held_back"] else "no") if "held_back" in run else "-"
            lines.append(f"| {_label(run)} | **{run['max_radii']:.3f}** | {run['mean_radii']:.4f} | "
                         f"{run['mean_inside_radii']:.3f} | {run['entering']:.0%} | {run['touching']:.0%} | "
                         f"{run['mean_drop_m']:.2f} | {dist} | {held} |")
        lines += ["", f"![particles held back by an unseen obstacle]({r['figure_name']})", ""]
    if cw:
        lines += [f"Cartpole: `{cw['constraint']}` on the {len(cw['episodes'])} test episodes (of "
                  f"{cw['test_episodes']}) whose MuJoCo trajectory starts short of the wall and crosses it by at "
                  f"least {cw['cross_by']:g} m within {cw['steps']} steps; recorded actions replayed open loop. "
                  "Violation [m] (max over episodes and steps; mean over all episode-steps), the fraction of "
                  "episodes in which the cart comes within 5 cm of the wall, and how far the constraint moved the "
                  "bodies before the unconstrained C-GNS's cart first came within 10 cm of it (disturbance):", ""]
        if cw["runs"]:
            lines += ["| rollout | max [m] | mean [m] | reaching | disturbance [m] |", "|---|---|---|---|---|"]
            for run in ordered_runs(cw):
                dist = f"{run['disturbance_m']:.4f}" if "disturbance_m" in run else "-"
                lines.append(f"| {_label(run)} | **{run['max']:.4f}** | {run['mean']:.4f} | {run['reaching']:.0%} "
                             f"| {dist} |")
        else:
            lines.append(cw.get("note", ""))
        lines.append("")
    lines += ["## Targets (issue 6)", ""]
    for k, v in r["targets"].items():
        lines.append(f"- {k}: **{'met' if v else 'missed'}**")
    return "\n".join(lines) + "\n"


def _jobs(n: int) -> str:
    return {1: "one job", 2: "two jobs"}.get(n, f"{n} jobs")


def _label(run: dict) -> str:
    if run["model"] == "mujoco":
        return "MuJoCo (ground truth)"
    if run["model"] == "forward":
        return "forward GN simulator"
    if "spec" not in run:
        return f"C-GNS, no constraint ({run['iterations']} it.)"
    return f"C-GNS + constraint, weight {run['weight']:g}, {run['iterations']} it."


def figure(arrays_path: Path, po: dict, data: dict, path: Path) -> Path:
    """Layout 0: the forward simulator, the C-GNS without and with the constraint (most iterations)."""
    from envs.obstacle.scene import SceneConfig
    from gndesign.constraint_sets import bind_constraints, constraint_terms
    from gndesign.datasets.particles import ParticleDataset
    from gndesign.plotting import pyplot, save_figure
    from gndesign.specs import parse_constraints
    from workflows.figures import draw_particle_scene, draw_particles, particle_view

    plt = pyplot()
    ds = ParticleDataset.load(data["valid"])
    cfg = SceneConfig.from_dict({k: v for k, v in ds.scene.items() if k in SceneConfig.__dataclass_fields__})
    arr = np.load(arrays_path)
    # The constrained run that holds the balls back and disturbs the others least; else, of those whose
    # balls reach the obstacle, the one that penetrates least.
    enter = po["runs"]["forward"]["entering"]

    def rank(k):
        run = po["runs"][k]
        return (not run["held_back"], run["touching"] < 0.5 * enter,
                run.get("disturbance_radii", 0.0) if run["held_back"] else run["max_radii"])

    constrained = min((k for k, v in po["runs"].items() if "spec" in v), key=rank)
    names = ["forward", "cgns", constrained]
    from gndesign.constraints import ConstraintContext

    terms = constraint_terms(bind_constraints(parse_constraints([po["runs"][constrained]["spec"]]),
                                              ConstraintContext(num_nodes=cfg.n_particles, dim=2,
                                                                margin=cfg.particle_radius)))
    xlim, ylim = particle_view(cfg, *(arr[n] for n in names))
    xs = np.concatenate([arr[n][..., 0].ravel() for n in names])  # the stream stays near the middle: zoom in
    xlim = (max(xlim[0], min(-1.0, float(xs.min()) - 0.3)), min(xlim[1], max(1.0, float(xs.max()) + 0.3)))
    fig, axes = plt.subplots(1, 3, figsize=(13, 5.2), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], names, strict=True):
        traj = arr[n]
        draw_particle_scene(ax, cfg, arr["obstacle"], terms, traj[0], xlim, ylim)
        for i in range(traj.shape[1]):
            ax.plot(traj[:, i, 0], traj[:, i, 1], "-", color="C0", lw=0.5, alpha=0.4)
        draw_particles(ax, traj[-1], cfg.particle_radius)
        run = po["runs"][n]
        ax.set_title(f"{_label(run)}\nmax penetration {run['max_radii']:.2f} radii, {run['touching']:.0%} of the balls "
                     "touch it", fontsize=9)
        ax.set_xlabel("x [m]")
    axes[0][0].set_ylabel("z [m]")
    fig.suptitle(f"Unseen obstacle `{po['runs'][constrained]['spec']}` (red): {cfg.n_particles} balls, "
                 f"{po['frames']} frames (traces and final positions, layout 0)", fontsize=10)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget per model (one thread)")
    p.add_argument("--particle-minutes", type=float, help="budget per particle model (default: --minutes)")
    p.add_argument("--episodes", type=int, default=300, help="cartpole training episodes (200 steps, seed 0)")
    p.add_argument("--test-episodes", type=int, default=200, help="cartpole test episodes (seed 1)")
    p.add_argument("--particle-data", default=str(ROOT / "data" / "obstacle"),
                   help="directory with the obstacle scene's train/ and valid/ (generated when missing)")
    p.add_argument("--sweep", type=int, nargs="+", default=[1, 2, 5, 10, 20], help="test-time solver iterations")
    p.add_argument("--obstacle", default=OBSTACLE, help="the unseen particle obstacle (a constraint spec)")
    p.add_argument("--layouts", type=int, default=8, help="ball layouts released above the unseen obstacle")
    p.add_argument("--wall", default=WALL, help="the cartpole constraint (a constraint spec)")
    p.add_argument("--wall-steps", type=int, default=100)
    p.add_argument("--wall-episodes", type=int, default=32, help="at most this many crossing test episodes")
    p.add_argument("--cross-by", type=float, default=0.2, help="[m] how far MuJoCo's cart must pass the wall")
    p.add_argument("--constraint-iterations", type=int, nargs="+", default=[5, 20],
                   help="solver iterations of the constrained C-GNS rollouts")
    p.add_argument("--weights", type=float, nargs="+", default=[1.0, 10.0, 100.0],
                   help="constraint weights to try (when --obstacle / --wall name none)")
    p.add_argument("--sweep-episodes", type=int, default=16, help="validation episodes of the particle sweep")
    p.add_argument("--only", choices=["particles", "cartpole", "all"], default="all")
    p.add_argument("--workers", type=int, default=2, help="jobs at a time (one thread each)")
    p.add_argument("--quick", action="store_true", help="tiny data and budgets, for a smoke run (about 2 minutes)")
    p.add_argument("--rerun", action="store_true", help="retrain and re-evaluate everything")
    p.add_argument("--reeval", action="store_true", help="re-evaluate (keep the trained models)")
    p.add_argument("--work", help="runs, data and cached evaluations (default: runs/bench_cgns[_quick])")
    p.add_argument("--out", help="the JSON report (default: results/cgns.json; .md and .png beside it)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    if args.quick:
        args.minutes, args.particle_minutes = 0.2, 0.2
        args.layouts, args.wall_episodes, args.wall_steps = 2, 4, 60
        args.sweep = sorted(set(args.sweep) & {1, 2, 5, 10}) or [1, 5]
        args.constraint_iterations = [5, 10]
        args.weights = [1.0, 100.0]
        args.sweep_episodes = 4
    args.particle_minutes = args.particle_minutes or args.minutes
    work = Path(args.work or ROOT / "runs" / ("bench_cgns_quick" if args.quick else "bench_cgns"))
    out = Path(args.out) if args.out else (work / "quick.json" if args.quick else ROOT / "results" / "cgns.json")
    if args.quick and out.resolve().parent == (ROOT / "results").resolve():
        raise SystemExit("--quick numbers mean nothing: write them elsewhere than results/ (--out)")
    if args.rerun and work.exists():
        shutil.rmtree(work)
    args.work = str(work)
    systems = ["particles", "cartpole"] if args.only == "all" else [args.only]

    t0 = time.perf_counter()
    data = {}
    if "particles" in systems:
        data["particles"] = particle_data(args)
    if "cartpole" in systems:
        data["cartpole"] = cartpole_data(args)
    data_seconds = time.perf_counter() - t0

    jobs = []
    for system in systems:
        opts = PARTICLE_OPTIONS if system == "particles" else CARTPOLE_OPTIONS
        minutes = args.particle_minutes if system == "particles" else args.minutes
        for model in ("forward", "cgns"):
            jobs.append({"name": f"{system}-{model}", "system": system, "model": model, "minutes": minutes,
                         "run": str(work / f"{system}-{model}"), "data": [data[system]["train"]], "options": opts})
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:  # a system's two models train side by side
        training = {r["name"]: r for r in pool.map(train_job, jobs)}
        # Equal optimizer steps: the forward model again, for as many steps as the C-GNS made in its time.
        jobs = [{**job, "name": f"{job['name']}-steps", "minutes": None, "run": f"{job['run']}-steps",
                 "steps": int(training[f"{job['system']}-cgns"]["summary"]["step"])}
                for job in jobs if job["model"] == "forward"]
        training.update({r["name"]: r for r in pool.map(train_job, jobs)})
    train_seconds = time.perf_counter() - t0

    evals = []
    for system in systems:
        base = {"forward": training[f"{system}-forward"]["checkpoint"],
                "forward_steps": training[f"{system}-forward-steps"]["checkpoint"],
                "cgns": training[f"{system}-cgns"]["checkpoint"], "data": data[system], "sweep": sorted(args.sweep),
                "constraint_iterations": args.constraint_iterations, "weights": args.weights,
                "sweep_episodes": args.sweep_episodes}
        if system == "particles":
            names = {"particle-errors": base,
                     "particle-obstacle": {**base, "obstacle": args.obstacle, "layouts": args.layouts,
                                           "arrays": str(work / "eval" / "particle-obstacle.npz")}}
        else:
            names = {"cartpole-errors": base,
                     "cartpole-wall": {**base, "wall": args.wall, "wall_steps": args.wall_steps,
                                       "wall_episodes": args.wall_episodes, "cross_by": args.cross_by}}
        evals += [{"name": n, "ctx": ctx, "cache": str(work / "eval" / f"{n}.json"), "reeval": args.reeval}
                  for n, ctx in names.items()]
    # The slowest (C-GNS particle rollouts) first.
    order = ["particle-errors", "particle-obstacle", "cartpole-errors", "cartpole-wall"]
    evals.sort(key=lambda j: order.index(j["name"]))
    t0 = time.perf_counter()
    results = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for r in pool.map(eval_job, evals):
            results.update(r)
    eval_seconds = time.perf_counter() - t0

    report = {
        "machine": machine_info(threads_per_job=1),
        "settings": {"quick": args.quick, "workers": args.workers, "minutes": args.minutes,
                     "particle_minutes": args.particle_minutes,
                     "solver_iterations": int(SOLVER[0].split("=")[1]),
                     "solver": next((v["config"]["solver"] for v in training.values() if v["model"] == "cgns"), None),
                     "sweep": sorted(args.sweep),
                     "constraint_iterations": args.constraint_iterations, "weights": args.weights,
                     "sweep_episodes": args.sweep_episodes, "obstacle": args.obstacle,
                     "layouts": args.layouts, "wall": args.wall, "wall_steps": args.wall_steps,
                     "cross_by": args.cross_by, "data": data, "options": {"particles": PARTICLE_OPTIONS,
                                                                          "cartpole": CARTPOLE_OPTIONS,
                                                                          "common": COMMON, "solver": SOLVER},
                     "noise": f"max({NOISE_SE:g} paired standard errors, {NOISE_REL:g} x the error)",
                     "targets": {"ratio": RATIO_TARGET, "penetration_radii": PENETRATION_TARGET}},
        "training": {k: {kk: vv for kk, vv in v.items() if kk != "config"} for k, v in training.items()},
        "config_differences": {s: config_differences(training[f"{s}-forward"]["config"],
                                                     training[f"{s}-cgns"]["config"]) for s in systems},
        "eval": results,
    }
    report["targets"] = targets(report)
    report["stage_seconds"] = {"data": data_seconds, "training": train_seconds, "evaluation": eval_seconds,
                               "evaluation_jobs": {k: v.get("seconds") for k, v in results.items()}}
    fig_path = out.with_suffix(".png")
    report["figure_name"] = fig_path.name
    if "particle-obstacle" in results:
        figure(work / "eval" / "particle-obstacle.npz", results["particle-obstacle"], data["particles"], fig_path)
        report["figure"] = str(fig_path)
    report["total_seconds"] = time.perf_counter() - start
    from gndesign.io import atomic_write_json, atomic_write_text

    atomic_write_json(out, report)
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
