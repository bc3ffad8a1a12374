"""Regenerate the shipped pretrained models (``gndesign/pretrained/*.pt``) from fixed seeds.

    python scripts/make_pretrained.py                 # all three (about 30 min on 2 cores)
    python scripts/make_pretrained.py --only cartpole

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
GN = ["model.latent_size=64", "model.mlp_hidden_size=64", "model.message_passing_steps=2",
      "train.log_every=200", "train.eval_every=1000", "train.checkpoint_every=1000", "train.threads=1"]
SPECS = {
    "cartpole": {"data": [("cartpole", 400, 0)], "steps": 15000},
    "swimmer6": {"data": [("swimmer6", 400, 0)], "steps": 8000},
    "swimmers": {"data": [(f"swimmer{n}", 120, n) for n in (3, 4, 5, 6, 7, 8, 9)], "steps": 10000},
}


def build(name: str, work: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from envs.generate import generate_dataset
    from gndesign.dataset import TrajectoryDataset
    from gndesign.evaluation import evaluate
    from gndesign.training import PRETRAINED_DIR, export_checkpoint, held_out_episodes, load_config, load_model, train

    spec = SPECS[name]
    work_dir = Path(work)
    data = []
    for system, episodes, seed in spec["data"]:
        out = work_dir / "data" / f"{system}-{episodes}x200-s{seed}"
        if not (out / "meta.json").exists():
            generate_dataset(system, episodes=episodes, steps=200, seed=seed, out_dir=out, overwrite=True,
                             progress=False)
        data.append(str(out))
    run = work_dir / name
    cfg = load_config(None, GN + [f"train.steps={spec['steps']}", "train.seed=0"])
    cfg.data = data
    ckpt = run / "checkpoints" / "latest.pt"
    resume = ckpt.exists()
    train(cfg, run, resume=resume, progress=False)
    dst = export_checkpoint(ckpt, PRETRAINED_DIR / f"{name}.pt")
    res = {"checkpoint": str(dst.relative_to(ROOT)), "steps": spec["steps"], "data": spec["data"], "eval": {}}
    for path in data:
        ds = TrajectoryDataset.load(path)
        model, blob = load_model(dst, ds.system)
        episodes, _ = held_out_episodes(blob, ds)
        e = evaluate(model, ds, episodes, (10, 50, 100))
        res["eval"][ds.system] = {k: e[k] for k in ("one_step_loss", "qpos_rmse", "body_pos_error")}
    return {name: res}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=sorted(SPECS), action="append")
    p.add_argument("--work", default=str(ROOT / "runs" / "pretrained"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    names = args.only or list(SPECS)
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = {}
        for r in pool.map(build, names, [args.work] * len(names)):
            results.update(r)
    import json

    from gndesign.io import atomic_write_json

    path = ROOT / "results" / "pretrained.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(results)
    atomic_write_json(path, old)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
