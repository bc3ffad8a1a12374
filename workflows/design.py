"""Inverse design of an obstacle that steers falling balls, scored in MuJoCo (``gndesign design``)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch

from envs.obstacle.geometry import mujoco_segments
from envs.obstacle.goals import get_design_goal
from envs.obstacle.problem import DesignProblem, check_descent_options, load_design_model, prior_map
from envs.obstacle.scene import design_fk, design_to_mjcf, load_scene_file, make_model, obstacle_segments
from envs.obstacle.simulation import smooth_designs
from gndesign.checkpoints import load_model
from gndesign.errors import ConfigError, GndesignError
from gndesign.io import atomic_write_json, atomic_write_text, check_finite, check_output, read_yaml_mapping
from gndesign.plotting import save_figure
from gndesign.specs import parse_constraints
from planners.design import DESIGN_OPTIMIZERS, design_options, make_design_optimizer
from workflows.figures import design_figure, history_figure

log = logging.getLogger("gndesign")

#: Optimizer settings for `gndesign design` (override with --steps and --set optimizer.KEY=VALUE).
#: Budgets count simulator calls (one rollout of one design each). The gradient's restarts start from
#: the initial design and the best 3 of 64 screened designs (smooth random shapes for a chain), screened
#: in two stages: all 64 on a fixed quarter of the balls, the best 12 of them on all balls.
#: Every optimizer minimizes the same objective: the task loss plus the smoothness prior.
DESIGN_DEFAULTS = {
    "gradient": {"iterations": 20, "lr": 0.2, "restarts": 4, "grad_clip": 1.0, "update": "normalized",
                 "backtrack": 0.3, "grow": 1.25, "screen": 64, "screen_keep": 12, "smoothness": 0.2},
    "cem": {"population": 16, "elites": 4, "iterations": 10, "init_std": 0.3, "smoothness": 0.2},
    "random": {"budget": 160, "batch": 16, "smoothness": 0.2},
}
#: Runners-up kept in a design's result (``candidates``), best first.
MAX_CANDIDATES = 8
#: How the gradient optimizer's learned loss is computed (:class:`envs.obstacle.problem.DesignProblem`):
#: a quarter of the balls per iteration (a new subset each time), the loss averaged over the last 10
#: frames with soft bin edges 4x as wide at first, annealed to the bin's; the result picked among
#: each restart's best and final design with all the balls. CEM and random search score all balls.
#: (``particles``: None, or a scene with at most that many balls, uses all of them.)
#: ``minibatch``: how each iteration's balls are drawn (``random``, or ``stratified`` over the layout);
#: ``grad_horizon``: frames over which the gradient through time is damped (``None``: the exact gradient).
LOSS_DEFAULTS = {"nodes": "spacing", "last_frames": 10, "temperature": 4.0, "particles": 25, "minibatch": "random",
                 "grad_horizon": None}


def polylines(seg: torch.Tensor) -> torch.Tensor:
    """``[B, 3 S - 1, 2]``: capsules ``seg [B, S, 2, 2]`` as one polyline per design, segments
    joined by NaN rows (gaps when plotted; a chain's shared vertices make no difference)."""
    gap = torch.full((*seg.shape[:-3], seg.shape[-3], 1, 2), torch.nan, dtype=seg.dtype)
    return torch.cat([seg, gap], -2).flatten(-3, -2)[..., :-1, :]


def design_obstacle(task: str = "bin", target_x: float | None = None, side: str = "right", segments: int | None = None,
                    optimizer: str = "gradient", simulator: str = "learned", model: str = "pretrained:obstacle",
                    iterations: int | None = None, seed: int = 0, options: dict | None = None,
                    scene: str | None = None, cfg=None, out: str | None = None, overwrite: bool = False,
                    constraints=None, loss: dict | None = None, obstacle: str | None = None, init=None) -> dict:
    """Optimize an obstacle, re-simulate the initial and final designs in MuJoCo and score them there.

    ``iterations``: optimizer steps (gradient: Adam steps; cem: refits; random: batches of designs).
    Returns a JSON-ready dict (design, MuJoCo scores, learned-model prediction, loss history, calls,
    times); with ``out``, also writes ``design.json``, ``design.xml`` (MJCF), ``design.png``
    (initial and final obstacle with MuJoCo particle traces) and ``loss.png`` (``out`` is checked
    first, :func:`gndesign.io.check_output`; ``overwrite`` allows a dataset or run directory there).
    The options are checked before anything is loaded; a design or score that is not finite is an
    error, never a result.

    ``constraints``: design constraints (strings ``"box lower=.. upper=.. keep=out"`` or specs, see
    :meth:`envs.obstacle.problem.DesignProblem.design_quantities`): penalties for every optimizer,
    then checked on the obstacle MuJoCo builds (``constraint_violation``, ``constraints_met``).
    ``loss``: the gradient run's learned loss (:data:`LOSS_DEFAULTS`). ``obstacle``: ``chain`` or
    ``bars`` (default: the scene's); ``segments``: K (chain segments or bars; the total length stays).
    ``init``: the design to start from (default: the scene's, the chain hanging straight down).
    """
    if optimizer not in DESIGN_OPTIMIZERS:
        raise GndesignError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(DESIGN_OPTIMIZERS)}")
    if simulator not in ("learned", "mujoco"):
        raise GndesignError(f"unknown simulator {simulator!r}: choose learned or mujoco")
    if optimizer == "gradient" and simulator == "mujoco":
        raise GndesignError("the gradient optimizer needs a differentiable simulator: use --simulator learned "
                            "(or --optimizer cem/random on mujoco)")
    opts = dict(DESIGN_DEFAULTS[optimizer], **(options or {}))
    if iterations is not None:
        opts["budget" if optimizer == "random" else "iterations"] = (
            iterations * opts.get("batch", 1) if optimizer == "random" else iterations)
    opts.update(design_options(optimizer, opts))
    if loss and optimizer != "gradient":
        raise GndesignError(f"loss options {sorted(loss)} shape the gradient optimizer's learned loss; {optimizer} "
                            "scores every design with all balls: drop them or use --optimizer gradient")
    loss_opts = dict(LOSS_DEFAULTS, **(loss or {})) if optimizer == "gradient" else {"nodes": "spacing"}
    unknown = sorted(set(loss_opts) - set(LOSS_DEFAULTS))
    if unknown:
        raise GndesignError(f"unknown loss options {unknown}; known: {', '.join(LOSS_DEFAULTS)}")
    try:  # before anything is loaded
        check_descent_options(loss_opts.get("minibatch", "random"), loss_opts.get("grad_horizon"))
    except ConfigError as e:
        raise GndesignError(f"loss option {e}") from None
    constraint_obj = parse_constraints(constraints if constraints is None or not isinstance(constraints, str)
                                       else [constraints])
    check_output(out, "dir", inputs=[scene, model if simulator == "learned" else None], overwrite=overwrite)
    if scene:  # a broken scene file fails before the model loads
        read_yaml_mapping(scene, "scene file")
    sim = None
    if simulator == "learned":
        if cfg is not None:
            sim, _ = load_model(model, "particles", scene=cfg.to_dict())
        else:
            sim, cfg = load_design_model(model, scene, segments, obstacle)
    elif cfg is None:
        cfg = load_scene_file(scene, segments=segments, obstacle=obstacle)
    if task == "bin":
        if target_x is None:
            raise GndesignError("the bin task needs --target-x")
        the_task = get_design_goal("bin", cfg, target_x=target_x)
    else:
        the_task = get_design_goal(task, cfg, side=side)
    if not (loss or {}).get("particles") and loss_opts.get("particles", 0) >= cfg.n_particles:
        loss_opts["particles"] = None  # a default minibatch as large as the scene: all balls
    try:
        problem = DesignProblem(cfg, the_task, seed, sim, constraints=constraint_obj, **loss_opts)
    except TypeError as e:
        raise GndesignError(f"bad loss options {loss_opts}: {e}") from None
    low, high = (torch.as_tensor(cfg.joint_ranges()[:, i]) for i in (0, 1))
    # The prior penalizes bends: differences of consecutive absolute segment angles (bars: of neighbours).
    # Random designs (random search, the gradient's restarts and screen): smooth chains, not crumpled ones
    # (bars: such chains cut into their bars).
    hooks = {"sample_fn": lambda n, gen: smooth_designs(cfg, n, gen)}
    if optimizer == "gradient":
        hooks.update(schedule=problem.anneal, select_fn=problem.full_loss,
                     screen_fn=problem.screen_loss if problem.screen_subset is not None else None)
    opt = make_design_optimizer(optimizer, low, high, seed=seed, prior_map=prior_map(cfg), **opts)
    init = torch.as_tensor(cfg.check_design(cfg.default_design() if init is None else init))
    loss = problem.learned_loss if simulator == "learned" else problem.mujoco_loss
    log.info("designing a %d-segment obstacle for %s with %s on %s", cfg.segments, the_task.to_dict(), optimizer,
             simulator)
    cpu0 = time.process_time()  # CPU time: the cost measure that a shared machine does not distort
    with torch.no_grad() if optimizer != "gradient" else contextlib.nullcontext():
        result = opt.optimize(loss, init, **hooks)
    cpu_seconds = time.process_time() - cpu0
    calls_opt = problem.mujoco_calls
    check_finite([result.design, result.objective], f"the {optimizer} design's objective",
                 f"every design it scored diverged in the {simulator} simulator; check the model and the options "
                 f"({', '.join(f'{k}={v}' for k, v in opts.items())})")
    # The number that counts: both designs re-simulated in MuJoCo from the same layout.
    t0 = time.perf_counter()
    truth = problem.simulate(torch.stack([init, result.design]))
    verify_s = time.perf_counter() - t0
    scores = the_task.score(truth[:, -1])
    out_dict = {
        "task": the_task.to_dict(), "region": list(the_task.region), "optimizer": optimizer, "simulator": simulator,
        "model": model if simulator == "learned" else None, "seed": seed, "options": opts,
        "loss_options": loss_opts if optimizer == "gradient" else None,
        "scene": cfg.to_dict(), "initial_design": init.tolist(), "design": result.design.tolist(),
        "obstacle": cfg.obstacle, "segments": cfg.segments, "design_dim": cfg.design_dim,
        "segments_xz": obstacle_segments(result.design[None], cfg)[0].tolist(),
        "vertices": design_fk(result.design[None], cfg)[0].tolist() if cfg.obstacle == "chain" else None,
        "score_initial": float(scores[0]), "score": float(scores[1]),
        "loss_initial": float(the_task.loss(truth[:1, -1])[0]), "loss": float(the_task.loss(truth[1:, -1])[0]),
        "objective": result.objective, "terms": result.terms, "history": result.history,
        "optimizer_seconds": result.seconds, "verify_seconds": verify_s,
        "evaluations": result.evaluations, "learned_calls": problem.learned_calls,
        "mujoco_calls": calls_opt + 1,  # the optimizer's, plus re-simulating the final design
        # The runners-up by the optimizer's own objective (the refined loop verifies the best few in MuJoCo)
        "candidates": None if result.candidates is None else result.candidates[:MAX_CANDIDATES].tolist(),
    }
    # The constraints, checked on the capsules MuJoCo builds from the final design.
    mj = torch.as_tensor(mujoco_segments(make_model(cfg, result.design.numpy())))
    out_dict["constraint_violation"] = float(problem.segments_penalty(mj[None])[0])
    out_dict["constraints_met"] = out_dict["constraint_violation"] <= 1e-9
    if sim is not None and optimizer == "gradient":
        t0 = time.process_time()
        with torch.no_grad():
            problem.learned_rollout(init[None].expand(opts.get("restarts", 1), -1))
        # One full forward rollout of the optimizer's batch (CPU seconds): the unit of rollout-equivalents.
        out_dict["rollout_cpu_seconds"] = time.process_time() - t0
        out_dict["optimizer_cpu_seconds"] = cpu_seconds
        unit = opts["iterations"] * out_dict["rollout_cpu_seconds"]
        out_dict["rollout_equivalents_per_iteration"] = cpu_seconds / unit
    if sim is not None:
        with torch.no_grad():
            pred = problem.learned_rollout(result.design[None])
        out_dict["predicted_score"] = float(the_task.score(pred[:, -1])[0])
        out_dict["model_error"] = float((pred[0].double() - truth[1]).norm(dim=-1).mean())
    check_finite({k: out_dict[k] for k in ("design", "score", "loss", "score_initial", "loss_initial")},
                 "the designs' MuJoCo scores", "MuJoCo diverged on these designs")
    if out:
        out_dir = Path(out)
        atomic_write_text(out_dir / "design.xml", design_to_mjcf(cfg, result.design.numpy()))
        vert = polylines(obstacle_segments(torch.stack([init, result.design]), cfg))
        title = f"{the_task.name} task, {optimizer} on {simulator}: MuJoCo score {scores[0]:.2f} -> {scores[1]:.2f}"
        fig = design_figure([{"title": f"initial design: {scores[0]:.0%} in the bin", "obstacle": vert[0],
                              "traces": truth[0]},
                             {"title": f"{optimizer} design: {scores[1]:.0%} in the bin", "obstacle": vert[1],
                              "traces": truth[1]}], (cfg.x_min, cfg.x_max), cfg.floor, the_task.region, title)
        save_figure(fig, out_dir / "design.png")
        save_figure(history_figure(result.history, f"{optimizer} on {simulator} (simulator loss terms)"),
                    out_dir / "loss.png")
        out_dict["files"] = {k: str(out_dir / f) for k, f in (("json", "design.json"), ("mjcf", "design.xml"),
                                                               ("figure", "design.png"), ("loss", "loss.png"))}
        atomic_write_json(out_dir / "design.json", out_dict)
    return out_dict
