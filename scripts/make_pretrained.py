"""Regenerate the shipped pretrained models (``gndesign/pretrained/*.pt``) from fixed seeds.

    python scripts/make_pretrained.py                 # all of them (multi alone: about 100 min on one thread)
    python scripts/make_pretrained.py --only cartpole
    python scripts/make_pretrained.py --only obstacle  # the particle simulator of the obstacle scene

Each model is trained for a fixed number of steps on one thread from a fixed data seed and
training seed, so the same command gives the same weights. The results (validation rollout errors)
go to ``results/pretrained.json``. Load a model by name: ``pretrained:cartpole``.
"""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# message_passing_steps unset: the tree's depth (cartpole 2, swimmer6 6); a spec's "options" add to these.
GN = ["model.latent_size=64", "model.mlp_hidden_size=64",
      "train.log_every=200", "train.eval_every=1000", "train.checkpoint_every=1000", "train.threads=1"]
SPECS = {
    # Issue 14's cartpole recipe: one hidden layer, batches of 256 (a 3-body graph is cheap), limit
    # features (the cart hits its rail's ends in a quarter of the random-action states), 150,000 steps
    # (30 minutes on one thread). 4000 episodes, each with its own masses and damping: 4x the parameter
    # sets of the earlier 1000 at the same steps cut the held-out one-step loss 2.9x and the h=100
    # error 26%, and identification (issue 16) errs less.
    "cartpole": {"data": [("cartpole", 4000, 11)], "steps": 150000,
                 "options": ["model.mlp_layers=1", "train.batch_size=256", "model.limit_features=true"]},
    # A coarse model: each step spans 8 control steps (the action held; data generated with
    # --action-repeat 8, 400 control steps = 50 model steps per episode): fast gradient MPC.
    "cartpole-k8": {"data": [("cartpole", 800, 0)], "steps": 15000, "action_repeat": 8, "control_steps": 400},
    # A swing-up policy (and value) learned only through pretrained:cartpole-k8 (gndesign policy
    # train), start states from that model's training data; needs cartpole-k8 built first.
    "cartpole-policy": {"kind": "policy", "model": "cartpole-k8", "task": "cartpole-swingup", "steps": 2300,
                        "policy": {"horizon": 128}, "train": {"lr_final": 3e-4, "log_every": 20, "eval_every": 20,
                                                               "checkpoint_every": 100}},
    # The issue-14 recipe: six message-passing steps (the tree's depth), one hidden layer per MLP,
    # batches of 64, 1000 episodes: 60,000 steps (31 minutes on one thread of a busy machine).
    "swimmer6": {"data": [("swimmer6", 1000, 0)], "steps": 60000,
                 "options": ["model.mlp_layers=1", "train.batch_size=64"]},
    # A coarse swimmer6 model for the swimmer policy and policy-guided MPC: each step spans 4 control
    # steps (0.12 s, the action held), the swimmer6 recipe otherwise.
    "swimmer6-k4": {"data": [("swimmer6", 1000, 0)], "steps": 40000, "action_repeat": 4, "control_steps": 400,
                    "options": ["model.mlp_layers=1", "train.batch_size=64"]},
    # A swimmer policy (and value) learned only through pretrained:swimmer6-k4: it sees the target in its head's
    # frame (swimmerN.yaml's policy: section); half the imagined episodes draw targets within +-0.5 m of the middle.
    "swimmer6-policy": {"kind": "policy", "model": "swimmer6-k4", "task": "swimmer6", "steps": 3000,
                        "eval_episodes": 20,
                        "policy": {"horizon": 64, "spread_fraction": 0.0, "imagined_fraction": 0.5,
                                   "near_fraction": 0.5, "near_scale": 0.25},
                        "train": {"lr_final": 1e-4, "log_every": 20, "eval_every": 20, "checkpoint_every": 100}},
    # One GN for every system. The five benchmark systems' data are bench_forward's (same seeds), so
    # its single-system GNs and this model hold out the same episodes. Each batch comes from one
    # dataset and passes messages to that system's own depth (model.per_system_depth; M = 9 for
    # swimmer9), the small trees in batches of 256 as their single-system recipes (cartpole's limit
    # features too), so a step costs what that system's single-system step does: 370,000 steps took
    # 113 minutes on one thread beside other jobs (64 steps/s in a probe, one job per core: 96
    # minutes), against the five single-system GNs' total budget of 5 x 20 minutes.
    "multi": {"data": [(s, 1000, 0) for s in ("pendulum", "cartpole", "acrobot", "swimmer6", "cheetah")]
              + [(f"swimmer{n}", 300, n) for n in (3, 4, 5, 7, 8, 9)], "steps": 370000,
              "options": ["model.mlp_layers=1", "train.batch_size=64", "train.datasets_per_batch=1",
                          "model.per_system_depth=true", "model.limit_features=true",
                          "train.system_batch_size={pendulum: 256, cartpole: 256, acrobot: 256}",
                          "train.checkpoint_every=5000", "train.eval_every=5000"]},
    # Swimmers 3-9 in one model, the zero-shot benchmark's recipe (message passing to swimmer9's depth,
    # one dataset per batch).
    "swimmers": {"data": [(f"swimmer{n}", 500, n) for n in (3, 4, 5, 6, 7, 8, 9)], "steps": 75000,
                 "options": ["model.mlp_layers=1", "train.batch_size=64", "train.datasets_per_batch=1",
                             "train.checkpoint_every=5000", "train.eval_every=5000"]},
    # The particle simulator of the obstacle-design scene (default SceneConfig): episodes and seeds
    # of the training and validation data (gndesign generate obstacle-scene), options, steps.
    "obstacle": {"kind": "particles", "train": (1200, 0), "valid": (50, 1), "steps": 250000,
                 "options": ["model.latent_size=64", "model.mlp_hidden_size=64", "model.message_passing_steps=3",
                             "model.radius=3.0", "model.history=5", "train.batch_size=4", "train.vel_noise=0.03",
                             "train.log_every=500", "train.eval_every=2000", "train.checkpoint_every=1000",
                             "train.val_fraction=0.05", "train.threads=1"]},
}


def build(name: str, work: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from envs.generate import generate_dataset
    from gndesign.checkpoints import PRETRAINED_DIR, export_checkpoint, load_model
    from gndesign.config import load_config
    from gndesign.datasets.trajectories import TrajectoryDataset
    from gndesign.evaluation import evaluate
    from gndesign.forward_training import held_out_episodes
    from gndesign.training import train

    spec = SPECS[name]
    work_dir = Path(work)
    if spec.get("kind") == "particles":
        return build_particles(name, work_dir)
    if spec.get("kind") == "policy":
        return build_policy(name, work_dir)
    data = model_data(spec, work_dir, generate_dataset)
    k = spec.get("action_repeat", 1)
    run = work_dir / name
    cfg = load_config(None, GN + spec.get("options", []) + [f"train.steps={spec['steps']}", "train.seed=0"])
    cfg.data = data
    ckpt = run / "checkpoints" / "latest.pt"
    resume = ckpt.exists()
    summary = train(cfg, run, resume=resume, progress=False)
    dst = export_checkpoint(ckpt, PRETRAINED_DIR / f"{name}.pt")
    res = {"checkpoint": str(dst.relative_to(ROOT)), "steps": spec["steps"], "data": spec["data"],
           "action_repeat": k, "train_seconds": run_seconds(run, summary), "resumed": resume, "eval": {}}
    for path in data:
        ds = TrajectoryDataset.load(path)
        model, blob = load_model(dst, "forward", system=ds.system)
        episodes, _ = held_out_episodes(blob, ds)
        # horizons in model steps: 10, 50, 100 control steps (and 400 for a k-step model), rounded down
        horizons = sorted({max(1, h // k) for h in (10, 50, 100, 400 if k > 1 else 100)})
        e = evaluate(model, ds, episodes, tuple(horizons))
        res["eval"][ds.system] = {k: e[k] for k in ("one_step_loss", "qpos_rmse", "body_pos_error")}
    return {name: res}


def run_seconds(run: Path, summary: dict) -> float | None:
    """The run's training time: its clock at the last logged step (it continues across resumes), or
    this session's seconds when nothing was logged."""
    from gndesign.training import Metrics

    return Metrics.read(run / "metrics.csv").last_time or summary.get("seconds")


def model_data(spec: dict, work_dir: Path, generate_dataset) -> list[str]:
    """The training datasets of an articulated model's spec (generated under ``work_dir`` if missing)."""
    data = []
    k, steps = spec.get("action_repeat", 1), spec.get("control_steps", 200)
    for system, episodes, seed in spec["data"]:
        out = work_dir / "data" / (f"{system}-{episodes}x{steps}-s{seed}" + (f"-k{k}" if k > 1 else ""))
        if not (out / "meta.json").exists():
            generate_dataset(system, episodes=episodes, steps=steps, seed=seed, out_dir=out, overwrite=True,
                             progress=False, action_repeat=k)
        data.append(str(out))
    return data


def build_policy(name: str, work_dir: Path) -> dict:
    """Train a policy through a shipped model (start states from that model's data), export it and
    score it in true MuJoCo (10 episodes, seeds 100-109)."""
    from envs.generate import generate_dataset
    from gndesign.checkpoints import PRETRAINED_DIR, export_checkpoint
    from workflows.policy import eval_policy, train_policy

    spec = SPECS[name]
    data = model_data(SPECS[spec["model"]], work_dir, generate_dataset)
    run = work_dir / name
    ckpt = run / "checkpoints" / "latest.pt"
    summary = train_policy(f"pretrained:{spec['model']}", spec["task"], run, data, spec["policy"],
                           dict(spec["train"], steps=spec["steps"], seed=0), resume=ckpt.exists(), progress=False)
    dst = export_checkpoint(ckpt, PRETRAINED_DIR / f"{name}.pt")
    episodes = spec.get("eval_episodes", 10)  # issue 15's protocol: 10 cartpole, 20 swimmer episodes
    ev = eval_policy(str(dst), spec["task"], episodes, 100)
    return {name: {"checkpoint": str(dst.relative_to(ROOT)), "kind": "policy", "model": f"pretrained:{spec['model']}",
                   "steps": spec["steps"], "train_seconds": summary.get("wall_s"),
                   "eval": {"episodes": episodes, "seeds": [100, 99 + episodes], "return_mean": ev["return_mean"],
                            "returns": [e["return"] for e in ev["episodes"]]}}}


def build_particles(name: str, work_dir: Path) -> dict:
    """Generate the obstacle scene's data, train the particle simulator, export and evaluate it."""
    from envs.obstacle.scene import SceneConfig
    from envs.obstacle.simulation import generate_obstacle_dataset
    from gndesign.checkpoints import PRETRAINED_DIR, export_checkpoint, load_model
    from gndesign.config import load_config
    from gndesign.datasets.particles import ParticleDataset
    from gndesign.particle_evaluation import particle_rollout_errors, summarize_particle_errors
    from gndesign.training import train

    spec = SPECS[name]
    scene = SceneConfig()
    data = {}
    for split in ("train", "valid"):
        episodes, seed = spec[split]
        out = work_dir / "data" / f"obstacle-{split}-{episodes}-s{seed}"
        if not (out / "meta.json").exists():
            generate_obstacle_dataset(scene, out, episodes, seed, overwrite=True)
        data[split] = out
    run = work_dir / name
    cfg = load_config(None, spec["options"] + [f"train.steps={spec['steps']}", "train.seed=0"], data=[data["train"]])
    ckpt = run / "checkpoints" / "latest.pt"
    summary = train(cfg, run, resume=ckpt.exists(), progress=False)
    dst = export_checkpoint(ckpt, PRETRAINED_DIR / f"{name}.pt")
    model, _ = load_model(dst, "particles", scene=scene.to_dict())
    valid = ParticleDataset.load(data["valid"])
    errors = summarize_particle_errors(particle_rollout_errors(model, valid), (10, 50, 100, valid.steps))
    return {name: {"checkpoint": str(dst.relative_to(ROOT)), "steps": spec["steps"], "kind": "particles",
                   "data": {k: list(spec[k]) for k in ("train", "valid")}, "train_seconds": summary.get("seconds"),
                   "eval": {"obstacle": errors}}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=sorted(SPECS), action="append")
    p.add_argument("--work", default=str(ROOT / "runs" / "pretrained"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    names = args.only or list(SPECS)
    models = [n for n in names if SPECS[n].get("kind") != "policy"]
    results = {}
    with ProcessPoolExecutor(max_workers=2) as pool:
        for r in pool.map(build, models, [args.work] * len(models)):
            results.update(r)
    for n in names:  # policies last: they learn through the models just built
        if n not in models:
            results.update(build(n, args.work))
    import json

    from gndesign.io import atomic_write_json

    path = ROOT / "results" / "pretrained.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(results)
    atomic_write_json(path, old)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
