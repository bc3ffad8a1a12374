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
its settings, checkpoints or code change); ``--rerun`` retrains everything, ``--reeval`` re-evaluates.

This file is the command line; the benchmark's parts live in ``scripts/cgns_bench/`` (data, training,
the two systems' evaluations, the evaluation cache, the report and figure).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cgns_bench.data import cartpole_data, particle_data
from cgns_bench.jobs import eval_job, evaluation_jobs
from cgns_bench.protocol import OBSTACLE, WALL
from cgns_bench.report import assemble, figure, markdown
from cgns_bench.train import equal_steps_jobs, train_job, training_jobs

from gndesign.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


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

    jobs = training_jobs(systems, data, work, args.minutes, args.particle_minutes)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:  # a system's two models train side by side
        training = {r["name"]: r for r in pool.map(train_job, jobs)}
        # Equal optimizer steps: the forward model again, for as many steps as the C-GNS made in its time.
        training.update({r["name"]: r for r in pool.map(train_job, equal_steps_jobs(jobs, training))})
    train_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for r in pool.map(eval_job, evaluation_jobs(systems, training, data, args, work)):
            results.update(r)
    eval_seconds = time.perf_counter() - t0

    report = assemble(args, systems, data, training, results)
    report["stage_seconds"] = {"data": data_seconds, "training": train_seconds, "evaluation": eval_seconds,
                               "evaluation_jobs": {k: v.get("seconds") for k, v in results.items()}}
    fig_path = out.with_suffix(".png")
    report["figure_name"] = fig_path.name
    if "particle-obstacle" in results:
        figure(work / "eval" / "particle-obstacle.npz", results["particle-obstacle"], data["particles"], fig_path)
        report["figure"] = str(fig_path)
    report["total_seconds"] = time.perf_counter() - start
    atomic_write_json(out, report)
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
