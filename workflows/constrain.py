"""Roll a C-GNS out under test-time constraints and report their violations (``gndesign constrain``)."""

from __future__ import annotations

import time

import numpy as np
import torch

from envs.generate import smooth_random_actions
from envs.obstacle.scene import design_fk, initial_positions, load_scene_file
from envs.systems import get_system
from gndesign.checkpoints import load_model
from gndesign.constraint_sets import bind_constraints, constraint_terms
from gndesign.datasets.particles import scene_mismatch
from gndesign.errors import GndesignError
from gndesign.io import check_finite
from gndesign.kinematics import forward_kinematics
from gndesign.objectives import Sum
from gndesign.solver import violation_report
from gndesign.specs import CONSTRAINTS, load_constraints, parse_constraints

#: Control steps of `gndesign constrain` on an articulated system (the particle scene: its frames).
CONSTRAIN_STEPS = 100
#: What a non-finite rollout most likely means (a non-finite constrained solve says more itself).
DIVERGED = "the model diverged from this start; try fewer solver iterations (--iterations) or fewer frames"
#: The particle scene's names on the command line.
PARTICLE_SYSTEMS = ("obstacle", "obstacle-scene")


def read_constraints(specs: list[str] | None, path: str | None = None):
    """The sum of the ``--constraint`` strings and the constraints of a ``--constraints`` YAML file."""
    terms = [c for c in (parse_constraints(specs), load_constraints(path) if path else None) if c is not None]
    if not terms:
        raise GndesignError("no constraints: pass --constraint SPEC (repeatable) and/or --constraints FILE.yaml, "
                            "e.g. --constraint 'disk center=0.5,1.0 radius=0.3 weight=100'")
    return terms[0] if len(terms) == 1 else Sum(terms)


def load_constrain_model(path: str, system: str):
    """The C-GNS of checkpoint ``path`` for ``system`` (a registered system or the obstacle scene)."""
    try:
        model, blob = load_model(path, ("cgns-particles", "cgns-articulated"))
    except GndesignError as e:
        if "not a C-GNS" in str(e):
            raise GndesignError(f"{e}: `gndesign constrain` needs a constraint-based solver (train one with "
                                "`gndesign train --family cgns ...`)") from None
        raise
    particles = system in PARTICLE_SYSTEMS
    if particles != (model.front == "particles"):
        want = "the obstacle scene (--system obstacle)" if model.front == "particles" else \
            f"articulated systems ({', '.join(model.trained_systems)})"
        raise GndesignError(f"checkpoint {path} holds a C-GNS of {want}, not of {system!r}")
    if not particles and system not in model.trained_systems:
        raise GndesignError(f"checkpoint {path} was trained on {model.trained_systems}, not on {system!r}")
    return model, blob


def spec_text(spec: dict) -> str:
    """A constraint spec as a command-line string: ``KIND`` and its own options, then ``weight``,
    ``nodes``, ``margin`` (unset options and the default quantity left out)."""
    def fmt(v):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else \
            (f"{v:g}" if isinstance(v, float) else str(v))

    common = ("weight", "nodes", "margin", "quantity")
    cls = CONSTRAINTS.get(spec["kind"])
    keys = [k for k in spec if k not in ("kind", *common)] + list(common)
    return " ".join([spec["kind"], *(f"{k}={fmt(spec[k])}" for k in keys if spec.get(k) is not None
                                     and not (k == "quantity" and cls and spec[k] == cls.default_quantity))])


def constrain_particles(model, blob: dict, constraints, steps: int | None = None, iterations: int | None = None,
                        seed: int = 0, design: list[float] | None = None, scene: str | None = None,
                        particles: int | None = None, compare: bool = False) -> tuple[dict, dict]:
    """Roll a particle C-GNS out in the obstacle scene under ``constraints`` for ``steps`` frames
    (default: the scene's).

    The particles start at rest at ``initial_positions(cfg, seed)``; the obstacle is ``design``
    (default: the scene's default design). Returns the JSON-ready result (violations in metres and
    in particle radii, per constraint) and the arrays to draw (``positions [T+1, N, 2]``,
    ``obstacle [K+1, 2]``, ``cfg``, the bound constraints, and ``baseline``, the rollout without
    constraints, with ``compare``).
    """
    try:
        cfg = load_scene_file(scene, dict(blob["scene"]), n_particles=particles)
    except GndesignError:
        if scene:
            raise
        # The model's scene lacks SceneConfig keys (data from elsewhere): the defaults, checked below.
        cfg = load_scene_file(None, n_particles=particles)
    diff = scene_mismatch(blob["scene"], cfg.to_dict())
    if diff:
        raise GndesignError(f"the C-GNS was trained on another scene ({'; '.join(diff)}); pass --scene FILE with "
                            "its settings")
    d = np.asarray(cfg.default_design() if design is None else design, dtype=np.float64)
    cfg.check_design(d)
    steps = steps or cfg.frames
    dtype = next(model.parameters()).dtype
    init = torch.as_tensor(initial_positions(cfg, seed), dtype=dtype)[None]
    obstacle = design_fk(torch.as_tensor(d, dtype=dtype)[None], cfg)
    bound = bind_constraints(constraints, model.constraint_context(cfg.n_particles))  # bad references fail here
    r = float(cfg.particle_radius)
    t0 = time.perf_counter()
    with torch.no_grad():
        traj = model.rollout(init, obstacle, steps, constraints=constraints, iterations=iterations)
    seconds = time.perf_counter() - t0
    check_finite(traj, "the constrained rollout", DIVERGED)

    def report(x):
        rep = violation_report(constraints, model.constraint_context(x.shape[2]), model.constraint_frames(x))
        for c in rep["constraints"]:
            c["max_radii"], c["mean_radii"] = c["max"] / r, c["mean"] / r
        rep["max_radii"] = rep["max"] / r
        return rep

    result = {"system": "obstacle", "front": "particles", "steps": steps,
              "iterations": model.predictor.default_iterations() if iterations is None else iterations, "seed": seed,
              "particles": cfg.n_particles, "particle_radius": r, "design": d.tolist(),
              "constraints": [spec_text(c.to_spec()) for c in constraint_terms(constraints)],
              "violations": report(traj), "rollout_seconds": seconds}
    arrays = {"positions": traj[0].double().numpy(), "obstacle": obstacle[0].double().numpy(), "cfg": cfg,
              "bound": bound, "baseline": None}
    if compare:
        with torch.no_grad():
            free = model.rollout(init, obstacle, steps, iterations=iterations)
        check_finite(free, "the rollout without constraints (--compare)", DIVERGED)
        result["unconstrained"] = report(free)
        arrays["baseline"] = free[0].double().numpy()
    return result, arrays


def constrain_articulated(model, system_name: str, constraints, steps: int | None = None,
                          iterations: int | None = None, seed: int = 0, actions: str = "zero",
                          compare: bool = False) -> tuple[dict, dict]:
    """Roll an articulated C-GNS out under ``constraints`` for ``steps`` control steps (default
    :data:`CONSTRAIN_STEPS`).

    The start is the system's random initial state ``System.initial_state`` with
    ``np.random.default_rng(seed)`` and nominal parameters; ``actions``: ``zero`` (no control: the
    default, so what moves the system is its initial velocity and gravity) or ``random`` (the smooth
    random actions of the training data, ``envs.generate.smooth_random_actions``, same generator).
    Returns the JSON-ready result and the arrays to draw (``qpos [T+1, nq]``, ``xpos [T+1, nbody, 3]``,
    ``tree``, ``dt``, the bound constraints, and the ``baseline`` rollout with ``compare``).
    """
    if actions not in ("zero", "random"):
        raise GndesignError(f"--actions must be zero or random, got {actions!r}")
    system = get_system(system_name, randomize=False)
    steps = steps or CONSTRAIN_STEPS
    rng = np.random.default_rng(seed)
    q0, v0 = system.initial_state(system.model, rng)
    a = smooth_random_actions(rng, steps, system.ctrlrange()) if actions == "random" else np.zeros((steps, system.nu))
    dtype = next(model.parameters()).dtype
    q, v, u = (torch.as_tensor(x, dtype=dtype)[None] for x in (q0, v0, a))
    bound = bind_constraints(constraints, model.constraint_context(system.name))  # bad references fail here
    t0 = time.perf_counter()
    with torch.no_grad():
        qs, vs = model.rollout(q, v, u, system.name, constraints=constraints, iterations=iterations)
    seconds = time.perf_counter() - t0
    check_finite((qs, vs), "the constrained rollout", DIVERGED)
    tree = model.tree(system.name)
    result = {"system": system.name, "front": "articulated", "steps": steps,
              "iterations": model.predictor.default_iterations() if iterations is None else iterations, "seed": seed,
              "actions": actions, "control_timestep": system.control_timestep,
              "constraints": [spec_text(c.to_spec()) for c in constraint_terms(constraints)],
              "violations": violation_report(constraints, model.constraint_context(system.name),
                                             model.constraint_frames(qs, vs, system.name)),
              "rollout_seconds": seconds}
    arrays = {"qpos": qs[0].double().numpy(), "xpos": forward_kinematics(tree, qs[0]).xpos.double().numpy(),
              "tree": tree, "dt": system.control_timestep, "bound": bound, "baseline": None}
    if compare:
        with torch.no_grad():
            fq, fv = model.rollout(q, v, u, system.name, iterations=iterations)
        check_finite((fq, fv), "the rollout without constraints (--compare)", DIVERGED)
        result["unconstrained"] = violation_report(constraints, model.constraint_context(system.name),
                                                   model.constraint_frames(fq, fv, system.name))
        arrays["baseline"] = {"qpos": fq[0].double().numpy(),
                              "xpos": forward_kinematics(tree, fq[0]).xpos.double().numpy()}
    return result, arrays
