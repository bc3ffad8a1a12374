"""The benchmark's evaluation jobs (a worker process, one thread each) and their cache: an
evaluation is recomputed when its settings, checkpoints or this package's code change."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .cartpole import eval_cartpole_errors, eval_cartpole_wall
from .particles import eval_particle_errors, eval_particle_obstacle

EVALS = {"particle-errors": eval_particle_errors, "particle-obstacle": eval_particle_obstacle,
         "cartpole-errors": eval_cartpole_errors, "cartpole-wall": eval_cartpole_wall}
#: The slowest (C-GNS particle rollouts) first.
ORDER = ["particle-errors", "particle-obstacle", "cartpole-errors", "cartpole-wall"]


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_fingerprint() -> str:
    """The code that measures: this package's modules."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def cached(path: Path, key: dict, compute, reeval: bool) -> dict:
    """``compute()`` unless ``path`` holds a result for the same ``key`` (settings, checkpoints)."""
    from gndesign.io import atomic_write_json

    fp = fingerprint(key)
    if path.exists() and not reeval:
        old = json.loads(path.read_text())
        if old.get("fingerprint") == fp:
            return old
    t0 = time.perf_counter()
    res = compute()
    res["fingerprint"], res["seconds"] = fp, time.perf_counter() - t0
    atomic_write_json(path, res)
    return json.loads(path.read_text())  # as a cached one reads (string keys)


def checkpoint_key(path: str) -> list:
    st = Path(path).stat()
    return [path, st.st_size, st.st_mtime_ns]


def evaluation_jobs(systems: list[str], training: dict, data: dict, args, work: Path) -> list[dict]:
    """Each system's two evaluations (errors and sweep; the unseen constraint), slowest first."""
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
    return sorted(evals, key=lambda j: ORDER.index(j["name"]))


def eval_job(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    ctx = job["ctx"]
    key = {k: v for k, v in ctx.items() if k not in ("forward", "cgns", "forward_steps", "arrays")}
    key.update(forward=checkpoint_key(ctx["forward"]), cgns=checkpoint_key(ctx["cgns"]),
               forward_steps=checkpoint_key(ctx["forward_steps"]) if ctx.get("forward_steps") else None,
               script=code_fingerprint())  # this code measured it
    return {job["name"]: cached(Path(job["cache"]), key, lambda: EVALS[job["name"]](ctx), job["reeval"])}
