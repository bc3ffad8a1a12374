"""Ground-truth rollouts and dataset generation.

Episode ``i`` of a dataset with seed ``s`` draws everything (physical parameters, initial state,
actions) from ``np.random.default_rng(np.random.SeedSequence([s, i]))`` in that order, so a
dataset does not depend on the number of worker processes: the same seed gives byte-identical
files. The format is described in :mod:`gndesign.datasets.trajectories`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing as mp
import os
import pickle
import queue
import signal
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from tqdm.auto import tqdm

from envs.nbody import generate_nbody_dataset, is_nbody_name
from envs.rollout_guard import SimulationError, check_rollout, episode_rng
from envs.systems import InitConfig, System, get_system
from gndesign.coarse import check_divides
from gndesign.datasets.base import RunningStats, merge_stats, shard_ranges, staging_directory, write_shard
from gndesign.datasets.params import PARAM_KEYS
from gndesign.datasets.trajectories import FORMAT, episode_stats, finalize, make_meta
from gndesign.errors import ConfigError, GndesignError, ModelError
from gndesign.processes import die_with_parent
from gndesign.tree import KinematicTree

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 32

# Action sampler settings (in control steps / fractions of the half range).
TAU_RANGE = (8.0, 60.0)  # correlation time, log-uniform per episode and actuator
AMPLITUDE_RANGE = (0.3, 1.2)  # std of the noise; above ~1 it saturates often (bang-bang)
OFFSET_RANGE = (-0.5, 0.5)  # per-episode bias
HOLDS_PER_100_STEPS = (0.0, 2.0)  # rate of constant holds, uniform per episode
HOLD_LENGTH = (5, 40)  # steps

# ----------------------------------------------------------------------------------------------
# Actions and rollouts
# ----------------------------------------------------------------------------------------------


def smooth_random_actions(rng: np.random.Generator, steps: int, ctrlrange: np.ndarray) -> np.ndarray:
    """Temporally correlated random controls ``[steps, nu]`` within ``ctrlrange [nu, 2]``.

    Per episode and actuator an Ornstein-Uhlenbeck process (stationary, unit variance) with a
    log-uniform correlation time in :data:`TAU_RANGE` steps, scaled by a random amplitude and
    shifted by a random offset (in half ranges), plus a few segments held at a constant value
    uniform in the range; then clipped to the range. Large amplitudes saturate, so the bounds are
    visited as well as the interior.
    """
    ctrlrange = np.asarray(ctrlrange, dtype=np.float64).reshape(-1, 2)
    nu = len(ctrlrange)
    lo, hi = ctrlrange[:, 0], ctrlrange[:, 1]
    center, half = (lo + hi) / 2, (hi - lo) / 2
    tau = np.exp(rng.uniform(math.log(TAU_RANGE[0]), math.log(TAU_RANGE[1]), size=nu))
    amplitude = rng.uniform(*AMPLITUDE_RANGE, size=nu)
    offset = rng.uniform(*OFFSET_RANGE, size=nu)
    x0 = rng.standard_normal(nu)
    noise = rng.standard_normal((steps, nu))
    a = np.exp(-1.0 / tau)
    b = np.sqrt(1.0 - a * a)
    # x[t] = a x[t-1] + sqrt(1 - a^2) noise[t], started from the stationary law N(0, 1).
    x = np.empty((steps, nu))
    prev = x0
    for t in range(steps):
        prev = a * prev + b * noise[t]
        x[t] = prev
    u = center + half * (offset + amplitude * x)
    n_holds = rng.poisson(rng.uniform(*HOLDS_PER_100_STEPS) * steps / 100.0)
    for _ in range(n_holds):
        start = int(rng.integers(0, max(steps, 1)))
        length = int(rng.integers(HOLD_LENGTH[0], HOLD_LENGTH[1] + 1))
        which = rng.random(nu) < 0.5
        value = rng.uniform(lo, hi)
        u[start : start + length, which] = value[which]
    return np.clip(u, lo, hi)


def rollout(
    system: System,
    params: Mapping[str, np.ndarray] | mujoco.MjModel,
    qpos0: np.ndarray,
    qvel0: np.ndarray,
    actions: np.ndarray,
    data: mujoco.MjData | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Step MuJoCo from ``(qpos0 [nq], qvel0 [nv])`` under ``actions [T, nu]``, each held for
    ``system.n_substeps`` calls of ``mj_step``; return ``qpos [T+1, nq]``, ``qvel [T+1, nv]``.

    ``params`` are the physical parameters (see :meth:`System.make_model`) or an already made
    model; ``data`` an ``MjData`` of that model to reuse (it is reset first). Raises
    :class:`SimulationError` on non-finite states or MuJoCo numerical warnings.
    """
    model = params if isinstance(params, mujoco.MjModel) else system.make_model(params)
    actions = np.asarray(actions, dtype=np.float64)
    qpos0 = np.asarray(qpos0, dtype=np.float64)
    qvel0 = np.asarray(qvel0, dtype=np.float64)
    if qpos0.shape != (model.nq,) or qvel0.shape != (model.nv,):
        raise GndesignError(
            f"{system.name}: initial state shapes {qpos0.shape}, {qvel0.shape}, need ({model.nq},), ({model.nv},)"
        )
    if actions.ndim != 2 or actions.shape[1] != model.nu:
        raise GndesignError(f"{system.name}: actions must be [T, {model.nu}], got {actions.shape}")
    if not (np.all(np.isfinite(qpos0)) and np.all(np.isfinite(qvel0)) and np.all(np.isfinite(actions))):
        raise SimulationError(f"{system.name}: non-finite initial state or actions")
    steps = len(actions)
    if data is None:
        data = mujoco.MjData(model)
    else:
        mujoco.mj_resetData(model, data)
    data.qpos[:] = qpos0
    data.qvel[:] = qvel0
    qpos = np.empty((steps + 1, model.nq))
    qvel = np.empty((steps + 1, model.nv))
    qpos[0], qvel[0] = qpos0, qvel0
    n_sub = system.n_substeps
    for t in range(steps):
        data.ctrl[:] = actions[t]
        mujoco.mj_step(model, data, nstep=n_sub)
        qpos[t + 1] = data.qpos
        qvel[t + 1] = data.qvel
    check_rollout(data, qpos, qvel, who=system.name,
                  advice="reduce the randomization ranges or the action range, or check the model")
    return qpos, qvel


def generate_episode(system: System, seed: int, episode: int, steps: int,
                     action_repeat: int = 1) -> dict[str, np.ndarray]:
    """Episode ``episode`` of a dataset with ``seed``: ``qpos [T+1, nq]``, ``qvel [T+1, nv]``,
    ``action [T, nu]`` and the physical parameters (keys of :data:`PARAM_KEYS`).

    With ``action_repeat = k`` (``steps`` a multiple of ``k``) the same random draws as for
    ``k = 1`` give the controls; the first of every ``k`` is held for ``k`` control steps and
    every ``k``-th state is kept: ``T = steps / k`` steps of a system whose control timestep is
    ``k`` times longer (the same episode, seen by a model that steps ``k`` control steps at once).
    """
    rng = episode_rng(seed, episode)
    params = system.sample_params(rng)
    model, data = system.workspace(params)
    qpos0, qvel0 = system.initial_state(model, rng)
    actions = smooth_random_actions(rng, steps, system.ctrlrange())
    k = int(action_repeat)
    if k > 1:
        actions = actions[::k]
    try:
        qpos, qvel = rollout(system, model, qpos0, qvel0, np.repeat(actions, k, axis=0) if k > 1 else actions,
                             data=data)
    except SimulationError as e:
        raise SimulationError(f"episode {episode} (seed {seed}): {e}") from None
    if k > 1:
        qpos, qvel = qpos[::k], qvel[::k]
    return {"qpos": qpos, "qvel": qvel, "action": actions, **params}


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class GenerationReport:
    """Where a dataset was written and how fast (usable as a path: ``os.fspath(report)``)."""

    path: Path
    system: str
    episodes: int
    steps: int
    seconds: float
    workers: int

    @property
    def transitions(self) -> int:
        return self.episodes * self.steps

    @property
    def rate(self) -> float:
        """Transitions (control steps) per second of wall time."""
        return self.transitions / max(self.seconds, 1e-12)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.system}, {self.episodes} episodes x {self.steps} steps in "
            f"{self.seconds:.1f} s ({self.rate:,.0f} transitions/s, {self.workers} workers)"
        )


@dataclasses.dataclass(frozen=True)
class _Job:
    seed: int
    steps: int
    directory: str
    action_repeat: int = 1


def _system_spec(system: System) -> dict[str, Any]:
    """What a worker process needs to rebuild ``system`` (an MjModel does not pickle)."""
    return {k: v for k, v in vars(system).items() if k != "model" and not k.startswith("_")}


def _rebuild_system(spec: dict[str, Any]) -> System:
    # An MJCF file is reloaded from its path (its assets may not all have been gathered); other
    # systems compile from their text, without importing dm_control in every worker.
    if Path(spec["source"]).suffix.lower() == ".xml" and Path(spec["source"]).is_file():
        return get_system(
            spec["source"], randomization=spec["randomization"], randomize=spec["randomize"], init=spec["init"]
        )
    model = mujoco.MjModel.from_xml_string(spec["mjcf"], spec["assets"])
    return System(model=model, **spec)


def _make_shard(
    system: System, job: _Job, index: int, start: int, stop: int
) -> tuple[int, dict[str, Any], dict[str, RunningStats]]:
    episodes = [generate_episode(system, job.seed, i, job.steps, job.action_repeat) for i in range(start, stop)]
    arrays = {k: np.stack([ep[k] for ep in episodes]) for k in ("qpos", "qvel", "action", *PARAM_KEYS)}
    arrays["episode"] = np.arange(start, stop, dtype=np.int64)
    entry = write_shard(job.directory, index, arrays, FORMAT.shard_keys)
    stats = episode_stats(arrays["qpos"], arrays["qvel"], arrays["action"],
                          system.control_timestep * job.action_repeat)
    return index, entry, stats


def _picklable_error(err: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - fall back to the text of any unpicklable error
        return RuntimeError(f"{type(err).__name__}: {err}")


def _worker_main(spec: dict[str, Any], tasks: Any, results: Any, parent_pid: int) -> None:
    """Worker process: build the system, then make shards from ``tasks`` until ``None``."""
    # The parent handles Ctrl-C and SIGTERM and terminates the workers; they must not raise on
    # Ctrl-C too, and must not outlive a parent killed outright (they would go on writing).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    try:
        system = _rebuild_system(spec)
        while (task := tasks.get()) is not None:
            results.put(("shard", _make_shard(system, *task)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(("error", (_picklable_error(e), traceback.format_exc())))


def _run_workers(
    system: System, tasks: list[tuple[_Job, int, int, int]], workers: int, start_method: str, bar: Any
) -> dict[int, tuple[dict[str, Any], dict[str, RunningStats]]]:
    """Run shard tasks on ``workers`` processes; return results by shard index.

    Plain processes and queues rather than ``multiprocessing.Pool``: a Pool silently restarts a
    worker that dies while starting (forever), whereas here a dead worker is an error."""
    ctx = mp.get_context(start_method)
    task_q, result_q = ctx.Queue(), ctx.Queue()
    for task in tasks:
        task_q.put(task)
    for _ in range(workers):
        task_q.put(None)
    procs = [
        ctx.Process(target=_worker_main, args=(_system_spec(system), task_q, result_q, os.getpid()),
                    daemon=True)
        for _ in range(workers)
    ]
    results: dict[int, tuple[dict[str, Any], dict[str, RunningStats]]] = {}
    try:
        for p in procs:
            p.start()
        while len(results) < len(tasks):
            try:
                kind, payload = result_q.get(timeout=0.2)
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead or all(p.exitcode == 0 for p in procs):
                    raise GndesignError(
                        f"a dataset generation worker exited unexpectedly (exit code {dead[:1]}); "
                        f"with start method {start_method!r} the main script must be importable "
                        "(run from a file, or use workers=1)"
                    ) from None
                continue
            if kind == "error":
                err, tb = payload
                log.debug("worker traceback:\n%s", tb)
                raise err
            index, entry, stats = payload
            results[index] = (entry, stats)
            bar.update(entry["episodes"][1] - entry["episodes"][0])
    finally:
        # Stop every worker before the caller removes the staging directory they write into.
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
        for q in (task_q, result_q):
            q.cancel_join_thread()
            q.close()
    return results


def check_generatable(system: System) -> None:
    """Refuse, before anything is simulated, a system whose data no model could learn from: one
    without degrees of freedom, or whose actuators use a transmission the graph cannot map onto
    joints (the check ``inspect`` and ``train`` make, :meth:`KinematicTree.from_model`). A
    passive system (no actuators) is fine: its actions are zero-width ``[T, 0]`` arrays."""
    if system.nv == 0:
        raise ModelError(f"{system.name} has no degrees of freedom (no joints): nothing in it moves, so there is "
                         "nothing to simulate; add a joint (or a free joint) to a body")
    KinematicTree.from_model(system.model, system.name)
    if system.nu == 0:
        log.info("%s has no actuators: generating passive rollouts (zero-width action arrays)", system.name)


def _generator_description(system: System) -> dict[str, Any]:
    init = {k: v for k, v in dataclasses.asdict(system.init).items() if k != "hook"}
    if system.init.hook is not None:
        init["hook"] = getattr(system.init.hook, "__qualname__", "custom")
    return {
        "episode_rng": "numpy.random.default_rng(numpy.random.SeedSequence([seed, episode]))",
        "order": "sample_params, initial_state, smooth_random_actions, rollout",
        "initial_state": init,
        "actions": {
            "sampler": "smooth_random_actions",
            "tau_steps": list(TAU_RANGE),
            "amplitude": list(AMPLITUDE_RANGE),
            "offset": list(OFFSET_RANGE),
            "holds_per_100_steps": list(HOLDS_PER_100_STEPS),
            "hold_length": list(HOLD_LENGTH),
        },
    }


def generate_dataset(
    system_name_or_path: str | os.PathLike | System,
    episodes: int,
    steps: int,
    seed: int,
    out_dir: str | os.PathLike,
    workers: int = 1,
    shard_size: int | None = None,
    randomize: bool = True,
    progress: bool = True,
    overwrite: bool = False,
    randomization: Mapping[str, Sequence[float]] | None = None,
    init: InitConfig | None = None,
    start_method: str = "spawn",
    action_repeat: int = 1,
) -> GenerationReport:
    """Generate ``episodes`` rollouts of ``steps`` control steps into ``out_dir``.

    With ``action_repeat = k`` (dividing ``steps``) each action is held for ``k`` control steps
    and every ``k``-th state recorded (:func:`generate_episode`): the dataset has ``steps / k``
    steps of ``k`` control timesteps, and its meta records ``action_repeat`` and the system's
    ``base_control_timestep``. ``k = 1`` writes exactly what it always did.

    Shards of ``shard_size`` episodes (default :data:`DEFAULT_SHARD_SIZE`) are produced by
    ``workers`` processes; the files do not depend on ``workers``. The dataset appears under
    ``out_dir`` only when complete: it is built in a temporary directory next to it, which is
    removed on any error or interrupt. A non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    if is_nbody_name(system_name_or_path):  # N-body particles (envs.nbody): no MuJoCo, no actions
        if action_repeat != 1 or not randomize:
            raise ConfigError("N-body systems have no actions and always draw masses and charges: drop "
                              "--action-repeat and --no-randomize")
        r = generate_nbody_dataset(system_name_or_path, episodes, steps, seed, out_dir, overwrite,
                                   shard_size or DEFAULT_SHARD_SIZE)
        return GenerationReport(r["path"], r["system"], episodes, steps, r["seconds"], 1)
    checks = (("episodes", episodes, 1), ("steps", steps, 1), ("workers", workers, 1), ("seed", seed, 0),
              ("action repeat", action_repeat, 1))
    for label, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")
    k = int(action_repeat)
    check_divides(k, int(steps), "the episode length (--control-steps)")
    shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    if not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise ConfigError(f"shard size must be an integer >= 1, got {shard_size!r}")
    if isinstance(system_name_or_path, System):
        system = system_name_or_path
        if randomization is not None or init is not None or not randomize:
            system = dataclasses.replace(
                system,
                randomization={**system.randomization, **(randomization or {})},
                randomize=randomize and system.randomize,
                init=init or system.init,
            )
    else:
        system = get_system(system_name_or_path, randomization=randomization, randomize=randomize, init=init)
    check_generatable(system)

    ranges = shard_ranges(episodes, int(shard_size))
    workers = min(int(workers), len(ranges))
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    with staging_directory(out_dir, overwrite) as tmp:
        job = _Job(int(seed), int(steps), str(tmp), k)
        tasks = [(job, i, start, stop) for i, (start, stop) in enumerate(ranges)]
        bar = tqdm(total=episodes, unit="episode", desc=f"generate {system.name}", disable=not progress)
        try:
            if workers == 1:
                results = {}
                for task in tasks:
                    index, entry, stats = _make_shard(system, *task)
                    results[index] = (entry, stats)
                    bar.update(task[3] - task[2])
            else:
                results = _run_workers(system, tasks, workers, start_method, bar)
        finally:
            bar.close()
        shards = [results[i][0] for i in range(len(ranges))]
        stats = merge_stats([results[i][1] for i in range(len(ranges))])
        meta = make_meta(
            system=system.name,
            mjcf=system.mjcf,
            assets=system.assets,
            timestep=system.timestep,
            control_timestep=system.control_timestep * k,
            n_substeps=system.n_substeps * k,
            nq=system.nq,
            nv=system.nv,
            nu=system.nu,
            nbody=system.nbody,
            episodes=episodes,
            steps=steps // k,
            seed=seed,
            randomize=system.randomize,
            randomization=system.randomization,
            shards=shards,
            generator=_generator_description(system),
        )
        if k > 1:  # absent means 1: k = 1 datasets stay byte-identical to those written before
            meta.update(action_repeat=k, base_control_timestep=float(system.control_timestep))
        finalize(tmp, meta, stats)
    report = GenerationReport(out_dir, system.name, episodes, steps // k, time.perf_counter() - t0, workers)
    log.info("%s", report)
    return report
