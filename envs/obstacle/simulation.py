"""MuJoCo simulation of obstacle designs and dataset generation for the obstacle scene.

:func:`simulate` rolls designs out in MuJoCo (the ground truth the learned simulators are trained
on and designs are judged by), checked by :mod:`envs.rollout_guard`;
:func:`generate_obstacle_dataset` writes random designs and layouts as a particle dataset.

Episode ``i`` of a dataset with seed ``s`` draws its design, then its initial layout, from
:func:`envs.rollout_guard.episode_rng` ``(s, i)``, so the data do not depend on the number of worker
processes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch
from tqdm.auto import tqdm

from envs.obstacle.scene import SceneConfig, design_fk, initial_positions, make_model
from envs.rollout_guard import check_rollout, episode_rng
from gndesign.datasets.particles import write_particle_dataset
from gndesign.errors import ConfigError
from gndesign.processes import die_with_parent, sigterm_as_interrupt

# ----------------------------------------------------------------------------------------------
# Rollouts
# ----------------------------------------------------------------------------------------------


def rollout_one(cfg: SceneConfig, design: np.ndarray, init: np.ndarray, model: mujoco.MjModel | None = None,
                data: mujoco.MjData | None = None) -> np.ndarray:
    """One episode: ``[T+1, N, 2]`` ball centres, frame 0 being ``init [N, 2]`` at rest.

    Raises :class:`envs.rollout_guard.SimulationError` on a fatal MuJoCo warning or a non-finite state."""
    model = make_model(cfg, design) if model is None else model
    data = mujoco.MjData(model) if data is None else data
    mujoco.mj_resetData(model, data)
    init = np.asarray(init, dtype=np.float64)
    if init.shape != (cfg.n_particles, 2) or not np.all(np.isfinite(init)):
        raise ConfigError(f"initial positions must be finite [{cfg.n_particles}, 2], got shape {init.shape}")
    data.qpos[:] = init.reshape(-1)
    out = np.empty((cfg.frames + 1, cfg.n_particles, 2))
    out[0] = init
    for t in range(cfg.frames):
        mujoco.mj_step(model, data, nstep=cfg.substeps)
        out[t + 1] = data.qpos.reshape(-1, 2)
    check_rollout(data, out, who="obstacle scene", advice="lower the timestep or stiffen solref")
    return out


def _simulate_chunk(cfg_dict: dict, designs: np.ndarray, inits: np.ndarray) -> np.ndarray:
    cfg = SceneConfig.from_dict(cfg_dict)
    return np.stack([rollout_one(cfg, d, p) for d, p in zip(designs, inits, strict=True)])


def _batch_of(init: Any) -> int:
    """How many episodes ``init`` describes (1 for one seed or one layout)."""
    if isinstance(init, int | np.integer):
        return 1
    arr = np.asarray(init)
    return len(arr) if arr.ndim in (1, 3) else 1


def _resolve_inits(cfg: SceneConfig, init: Any, batch: int) -> np.ndarray:
    if isinstance(init, int | np.integer):
        return np.broadcast_to(initial_positions(cfg, int(init)), (batch, cfg.n_particles, 2)).copy()
    arr = np.asarray(init)
    if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
        if len(arr) != batch:
            raise ConfigError(f"got {len(arr)} seeds for {batch} designs")
        return np.stack([initial_positions(cfg, int(s)) for s in arr])
    arr = arr.astype(np.float64)
    if arr.shape == (cfg.n_particles, 2):
        return np.broadcast_to(arr, (batch, cfg.n_particles, 2)).copy()
    if arr.shape != (batch, cfg.n_particles, 2):
        raise ConfigError(f"initial positions must be [{cfg.n_particles}, 2] or [{batch}, {cfg.n_particles}, 2], "
                          f"got {arr.shape}; or pass one seed or {batch} integer seeds")
    return arr


def simulate(cfg: SceneConfig, designs: np.ndarray | torch.Tensor, init: Any = 0, workers: int = 1,
             progress: bool = False) -> np.ndarray:
    """Ground-truth rollouts ``[B, T+1, N, 2]`` of ``designs [B, K]`` (a single design ``[K]`` or
    ``[1, K]`` is repeated for every seed or layout in ``init``).

    ``init`` is one seed (the same layout for every design), ``B`` integer seeds, or initial
    positions ``[N, 2]`` / ``[B, N, 2]``. One model per design, one reused ``MjData``; with
    ``workers > 1`` designs are split over that many processes.
    """
    cfg.validate()
    designs = cfg.check_design(designs).reshape(-1, cfg.design_dim)
    n_init = _batch_of(init)
    if len(designs) == 1 and n_init > 1:
        designs = np.repeat(designs, n_init, axis=0)
    B = len(designs)
    inits = _resolve_inits(cfg, init, B)
    out = np.empty((B, cfg.frames + 1, cfg.n_particles, 2))
    bar = tqdm(total=B, desc="MuJoCo rollouts", unit="episode", disable=not progress)
    if workers <= 1 or B < 2:
        data = None
        for b in range(B):
            model = make_model(cfg, designs[b])
            # Designs change only geom placements, so every model has the same sizes: one MjData serves all.
            data = mujoco.MjData(model) if data is None else data
            out[b] = rollout_one(cfg, designs[b], inits[b], model=model, data=data)
            bar.update(1)
        bar.close()
        return out
    chunks = np.array_split(np.arange(B), min(B, 8 * workers))
    # Workers die with this process (they would go on simulating), and an error or interrupt
    # (Ctrl-C, SIGTERM) stops them at once instead of waiting for the remaining chunks.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=die_with_parent,
                               initargs=(os.getpid(),))
    try:
        with sigterm_as_interrupt():
            futures = {pool.submit(_simulate_chunk, cfg.to_dict(), designs[c], inits[c]): c for c in chunks}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                bar.update(len(futures[future]))
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown()
    return out


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------


def sample_design(cfg: SceneConfig, rng: np.random.Generator, max_tries: int = 1000) -> np.ndarray:
    """``[K]`` a design uniform in the joint ranges among those clear of the source region."""
    r = cfg.joint_ranges()
    for _ in range(max_tries):
        d = rng.uniform(r[:, 0], r[:, 1])
        if cfg.design_clearance(d) > 0:
            return d
    raise ConfigError(f"no design clear of the source region in {max_tries} draws; raise source_z")


def smooth_designs(cfg: SceneConfig, n: int, generator: torch.Generator | None = None,
                   max_pieces: int = 4) -> torch.Tensor:
    """``[n, D]`` random designs whose absolute segment angles follow a piecewise-linear profile: 1 to
    ``max_pieces`` pieces between knots drawn uniformly in ``first_angle_range`` (ramps, bends, lips
    at any resolution ``K``), the joint angles clipped to their ranges. Bars: the same chains from
    the anchor cut into their ``K`` bars (:func:`chain_as_bars`), so a random bar design is a ramp of
    touching bars the balls meet, not bars scattered where no ball passes.

    Uniform joint angles crumple a chain of many segments (their absolute angles are a random walk);
    these are the shapes a long chain is designed into, for random search and the gradient
    optimizer's restarts and screen (``gndesign design``).
    """
    if n < 0 or max_pieces < 1:
        raise ValueError(f"need n >= 0 and max_pieces >= 1, got {n}, {max_pieces}")
    chain = cfg if cfg.obstacle == "chain" else dataclasses.replace(cfg, obstacle="chain")
    lo, hi = chain.first_angle_range
    pieces = torch.randint(1, max_pieces + 1, (n,), generator=generator)
    knots = lo + (hi - lo) * torch.rand(n, max_pieces + 1, generator=generator, dtype=torch.float64)
    s = torch.linspace(0, 1, chain.segments, dtype=torch.float64)[None] * pieces[:, None]  # [n, K] in knot units
    k = torch.minimum(s.floor().long(), pieces[:, None] - 1)  # the piece of each segment (the last end: the last)
    t = s - k
    a = knots.gather(1, k) * (1 - t) + knots.gather(1, k + 1) * t  # absolute angles [n, K]
    design = torch.cat([a[:, :1], a.diff(dim=-1)], dim=-1)
    r = torch.as_tensor(chain.joint_ranges())
    design = torch.maximum(torch.minimum(design, r[:, 1]), r[:, 0])
    return design if cfg.obstacle == "chain" else chain_as_bars(design, cfg)


def chain_as_bars(design: torch.Tensor, cfg: SceneConfig) -> torch.Tensor:
    """``[B, 3 K]`` the bars design of a bars scene ``cfg`` that lays its ``K`` bars where the segments
    of the chain ``design [B, K]`` (joint angles from the scene's anchor) lie: each bar's centre and
    absolute angle, clipped to the bars' ranges."""
    if cfg.obstacle != "bars":
        raise ConfigError("chain_as_bars lays bars: pass a bars scene")
    v = design_fk(design, dataclasses.replace(cfg, obstacle="chain"))
    centre = (v[..., :-1, :] + v[..., 1:, :]) / 2
    bars = torch.cat([centre, design.cumsum(-1)[..., None]], -1).flatten(-2)
    r = torch.as_tensor(cfg.joint_ranges(), dtype=bars.dtype)
    return torch.maximum(torch.minimum(bars, r[:, 1]), r[:, 0])


def episode_setup(cfg: SceneConfig, seed: int, episode: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode ``episode`` of a dataset with ``seed``: its design ``[K]`` and initial positions ``[N, 2]``."""
    rng = episode_rng(seed, episode)
    design = sample_design(cfg, rng)
    return design, initial_positions(cfg, rng)


@dataclasses.dataclass
class ObstacleGenerationReport:
    """Where an obstacle-scene dataset was written and how fast (usable as a path)."""

    path: Path
    episodes: int
    steps: int
    particles: int
    seconds: float

    @property
    def seconds_per_episode(self) -> float:
        return self.seconds / max(self.episodes, 1)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return (f"{self.episodes} episodes x {self.steps} frames x {self.particles} balls -> {self.path} "
                f"({self.seconds:.1f} s, {self.seconds_per_episode * 1000:.0f} ms/episode)")


def generate_obstacle_dataset(cfg: SceneConfig, out_dir: str | Path, episodes: int, seed: int, workers: int = 1,
                              overwrite: bool = False, progress: bool = False) -> ObstacleGenerationReport:
    """Simulate ``episodes`` random designs (uniform in the joint ranges, clear of the source) from
    random layouts and write them with :func:`gndesign.datasets.particles.write_particle_dataset`.

    Episode ``i`` depends only on ``(seed, i)`` (see the module docstring), not on ``workers``.
    """
    cfg.validate()
    if cfg.obstacle != "chain":
        raise ConfigError(f"datasets hold chain obstacles (vertices); this scene's obstacle is {cfg.obstacle!r}: "
                          "set obstacle: chain")
    if int(episodes) != episodes or episodes < 1:
        raise ConfigError(f"episodes must be a positive integer, got {episodes}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"{out_dir} already exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    start = time.perf_counter()
    setups = [episode_setup(cfg, seed, i) for i in range(episodes)]
    designs = np.stack([d for d, _ in setups])
    inits = np.stack([p for _, p in setups])
    positions = simulate(cfg, designs, inits, workers=workers, progress=progress)
    obstacle = design_fk(torch.as_tensor(designs), cfg).numpy()
    generator = {"scene": "obstacle", "designs": "uniform in the joint ranges, clear of the source region",
                 "layouts": "random subset of the source grid, jittered", "rng": "SeedSequence([seed, episode])"}
    write_particle_dataset(out_dir, positions, obstacle, designs, cfg.to_dict(), seed, overwrite=overwrite,
                           generator=generator)
    return ObstacleGenerationReport(out_dir, episodes, cfg.frames, cfg.n_particles, time.perf_counter() - start)
