"""Benchmark of the equivariant N-body network (issue 18 item 4): test acceleration error of
``model.net=egnn`` against the plain graph network (``model.net=gn``, standard messages) per
training-set size, on the test set as generated and randomly rotated (reflections included), and
the cost of a training step (forward + backward, one thread, side by side).

    PYTHONPATH=. python scripts/bench_equivariant.py --work /tmp/bench_eq --systems spring-2d charge-2d \
        --sizes 100 1000 --steps 2000

A training set of ``S`` transitions is ``S / K`` episodes of ``K`` steps (seed 0; ``K`` is
``--steps-per-episode``, 25 by default: 100 transitions are then 4 starts, ``--steps-per-episode 2``
gives 50); the test set is 40 other episodes of 25 steps (seed 1). The error is the mean absolute
acceleration error over the test frames divided by the mean absolute true acceleration. Parts run
in parallel (own ``--out`` each) are joined with ``--merge``; every run writes the table next to
the JSON (``.md``).

The obstacle scene, where gravity and the walls break the symmetry (the equivariant network takes
them as explicit inputs), per number of training episodes (150 frames of 100 balls each, seed 0),
both networks with the shipped ``pretrained:obstacle`` recipe and the same steps; the error is the
mean ball position error of open-loop rollouts from rest on 50 other episodes (seed 1):

    PYTHONPATH=. python scripts/bench_equivariant.py --work /tmp/bench_eq --obstacle 2 20 200 --steps 6000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from envs.nbody import generate_nbody_dataset
from gndesign.checkpoints import load_model
from gndesign.datasets.nbody import NBodyDataset
from gndesign.io import atomic_write_json, atomic_write_text
from gndesign.nbody_training import FrameSampler
from gndesign.particle_evaluation import particle_rollout_errors, summarize_particle_errors
from workflows.train import train_model

STEPS_PER_EPISODE = 25
NETS = ("gn", "egnn")


def random_orthogonal(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random orthogonal matrices ``[n, dim, dim]`` (rotations and reflections)."""
    q, r = torch.linalg.qr(torch.randn(n, dim, dim, generator=gen))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]


@torch.no_grad()
def test_error(model, frames: FrameSampler, rotate: bool) -> float:
    x, v, m, q, a = (frames.data[k] for k in ("positions", "velocities", "masses", "charges", "accelerations"))
    if rotate:
        rot = random_orthogonal(len(x), x.shape[-1], torch.Generator().manual_seed(7))
        x, v, a = (t @ rot.transpose(-1, -2) for t in (x, v, a))
    model.eval()
    pred = torch.cat([model(*(t[c] for t in (x, v, m, q))) for c in torch.arange(len(x)).split(1024)])
    return float((pred - a).abs().mean() / a.abs().mean())


def step_cost(model, frames: FrameSampler, batch: int, repeats: int = 30) -> float:
    """Seconds per training step (loss, backward) on ``batch`` frames."""
    model.train()
    x = frames.batch(torch.arange(batch))
    for k in range(repeats + 3):
        if k == 3:
            t0 = time.perf_counter()
        model.zero_grad()
        model.loss(*x)[0].backward()
    return (time.perf_counter() - t0) / repeats


def trained(run: Path, data: Path, net: str, steps: int, kind: str = "nbody", options: tuple[str, ...] = (),
            seed: int = 0):
    """The model ``net`` trained ``steps`` steps on ``data`` into ``run`` (reused when there)."""
    ckpt = run / "checkpoints" / "latest.pt"
    sets = [*options, f"model.net={net}", "train.threads=1", f"train.seed={seed}", "train.val_fraction=0",
            f"train.eval_every={steps}", f"train.checkpoint_every={steps}"]
    if not ckpt.exists():
        train_model(str(run), [str(data)], overrides=sets, steps=steps, progress=False)
    return load_model(ckpt, kind)


# The shipped obstacle model's recipe (scripts/make_pretrained.py), for both networks.
OBSTACLE = ("model.latent_size=64", "model.mlp_hidden_size=64", "model.message_passing_steps=3", "model.radius=3.0",
            "model.history=5", "train.batch_size=4", "train.vel_noise=0.03", "train.log_every=500")


def particle_step_cost(model, data, batch: int = 4, repeats: int = 20) -> float:
    """Seconds per training step (loss, backward) on ``batch`` frames of the first episodes."""
    C = model.history
    pos = torch.as_tensor(data.positions[:batch, 40:42 + C], dtype=torch.float32)
    obs = torch.as_tensor(data.obstacle[:batch], dtype=torch.float32)
    model.train()
    for k in range(repeats + 3):
        if k == 3:
            t0 = time.perf_counter()
        model.zero_grad()
        model.loss(pos[:, :C + 1], obs, pos[:, C + 1]).backward()
    return (time.perf_counter() - t0) / repeats


def obstacle_rows(work: Path, sizes: list[int], steps: int, seeds: list[int], results: dict, out: Path) -> None:
    """GN and EGNN on the obstacle scene per number of training episodes (means over the training
    ``seeds``), into ``results["obstacle"]``."""
    from envs.obstacle.scene import SceneConfig
    from envs.obstacle.simulation import generate_obstacle_dataset
    from gndesign.datasets.particles import ParticleDataset

    def data(episodes: int, seed: int) -> Path:
        path = work / f"obstacle-{episodes}-s{seed}"
        if not (path / "meta.json").exists():
            generate_obstacle_dataset(SceneConfig(), path, episodes, seed, overwrite=True)
        return path

    valid = ParticleDataset.load(data(50, 1))
    horizons = (10, 50, 100, valid.steps)
    rows = results.setdefault("obstacle", {"steps": steps, "sizes": {}})
    for size in sizes:
        train = data(size, 0)
        for net in NETS:
            runs = []
            for seed in seeds:
                t0 = time.time()
                run = work / (f"run-obstacle-{size}-{net}" + (f"-t{seed}" if seed else ""))
                model, blob = trained(run, train, net, steps, "particles", OBSTACLE, seed=seed)
                err = summarize_particle_errors(particle_rollout_errors(model, valid), horizons)
                runs.append({"position_error": err["position_error"], "mean": err["mean_position_error"],
                             "finite": err["finite"], "seconds": time.time() - t0})
            row = {"position_error": {h: round(float(np.mean([r["position_error"][h] for r in runs])), 5)
                                      for h in horizons},
                   "mean_position_error": round(float(np.mean([r["mean"] for r in runs])), 5),
                   "finite": all(r["finite"] for r in runs), "transitions": size * valid.steps,
                   "steps": int(blob["step"]), "seconds": round(float(np.mean([r["seconds"] for r in runs])), 1),
                   "step_seconds": round(particle_step_cost(model, valid), 4)}
            if len(runs) > 1:
                row.update(seeds=list(seeds), mean_position_errors=[round(r["mean"], 5) for r in runs])
            rows["sizes"].setdefault(str(size), {})[net] = row
            print("obstacle", size, net, row, flush=True)
            atomic_write_json(out, results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--systems", nargs="+", default=["spring-2d"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[100, 1000])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (rows give the mean error)")
    ap.add_argument("--steps-per-episode", type=int, default=STEPS_PER_EPISODE,
                    help="steps per training episode (the number of starts is the size over this)")
    ap.add_argument("--obstacle", nargs="+", type=int, default=None, metavar="EPISODES",
                    help="the obstacle scene instead of the N-body systems, at these numbers of training episodes")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="merge the N-body rows of these result files into --out and write its table, then stop")
    ap.add_argument("--out", default=None, help="JSON file of the results (default WORK/equivariant.json)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    out = Path(args.out or work / "equivariant.json")
    # Runs of other systems already in --out are kept (each row records its own steps).
    results: dict = json.loads(out.read_text()) if out.exists() else {"steps": args.steps, "systems": {}}
    if args.merge:  # the rows of other runs' --out files (e.g. systems run in parallel; later files win)
        for path in args.merge:
            for key, systems in json.loads(Path(path).read_text()).items():
                if key.startswith("systems"):
                    for system, sizes in systems.items():
                        results.setdefault(key, {}).setdefault(system, {}).update(sizes)
        atomic_write_json(out, results)
        write_table(results, out.with_suffix(".md"))
        return
    if args.obstacle:
        obstacle_rows(work, args.obstacle, args.steps, args.seeds, results, out)
        return
    spe = args.steps_per_episode
    key, tag = ("systems", "") if spe == STEPS_PER_EPISODE else (f"systems_{spe}_steps_per_episode", f"-spe{spe}")
    for system in args.systems:
        test_dir = work / f"test-{system}"
        if not (test_dir / "meta.json").exists():
            generate_nbody_dataset(f"nbody-{system}", 40, STEPS_PER_EPISODE, seed=1, out_dir=test_dir)
        ds = NBodyDataset.load(test_dir)
        test = FrameSampler([ds], [range(len(ds.positions))])
        rows = results.setdefault(key, {}).setdefault(system, {})
        for size in args.sizes:
            data = work / f"train-{system}-{size}{tag}"
            if not (data / "meta.json").exists():
                generate_nbody_dataset(f"nbody-{system}", max(1, size // spe), spe, seed=0, out_dir=data)
            for net in NETS:
                runs = []
                for seed in args.seeds:
                    t0 = time.time()
                    run = work / (f"run-{system}-{size}{tag}-{net}" + (f"-t{seed}" if seed else ""))
                    model, blob = trained(run, data, net, args.steps, seed=seed)
                    runs.append({"error": test_error(model, test, False),
                                 "rotated_error": test_error(model, test, True),
                                 "train_seconds": time.time() - t0, "steps": int(blob["step"])})
                row = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]} | {"steps": runs[0]["steps"]}
                if len(runs) > 1:  # the mean over training seeds, and each seed's error
                    row.update(seeds=list(args.seeds), errors=[round(r["error"], 4) for r in runs])
                rows.setdefault(str(size), {})[net] = {**row, "step_seconds": round(step_cost(model, test, 64), 5),
                                                       "steps_per_episode": spe}
                print(system, size, net, rows[str(size)][net], flush=True)
                atomic_write_json(out, results)
    write_table(results, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


def write_table(results: dict, path: Path) -> None:
    """The N-body rows of ``results`` as a markdown table (one per protocol)."""
    lines = ["# Equivariant (EGNN) vs plain GN: relative test acceleration error (scripts/bench_equivariant.py)", ""]
    for key in sorted(k for k in results if k.startswith("systems")):
        spe = key.split("_")[1] if key != "systems" else str(STEPS_PER_EPISODE)
        lines += [f"## Training episodes of {spe} steps", "",
                  "| system | transitions | starts | GN | EGNN | EGNN lower by | rotated GN / EGNN | training seeds |",
                  "|---|---|---|---|---|---|---|---|"]
        for system, sizes in results[key].items():
            for size, r in sorted(sizes.items(), key=lambda kv: int(kv[0])):
                if not {"gn", "egnn"} <= r.keys():
                    continue
                gn, eq = r["gn"], r["egnn"]
                lines.append(f"| {system} | {int(size):,} | {max(1, int(size) // int(spe)):,} | {gn['error']:.3f} | "
                             f"{eq['error']:.3f} | {1 - eq['error'] / gn['error']:.0%} | {gn['rotated_error']:.3f} / "
                             f"{eq['rotated_error']:.3f} | {len(gn.get('seeds', [0]))} |")
        lines.append("")
    atomic_write_text(path, "\n".join(lines))


if __name__ == "__main__":
    main()
