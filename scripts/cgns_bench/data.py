"""The benchmark's data: the obstacle particle scene and cartpole (generated when missing)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

log = logging.getLogger("bench_cgns")


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


def scene_of(ds):
    """The obstacle scene of a particle data set (its stored scene, less what is not a scene option)."""
    from envs.obstacle.scene import SceneConfig

    names = {f.name for f in dataclasses.fields(SceneConfig)}
    return SceneConfig.from_dict({k: v for k, v in ds.scene.items() if k in names})
