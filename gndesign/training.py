"""Training forward models: configuration, sampling, noise, checkpoints, resume and DDP.

A run directory holds ``config.yaml`` (the resolved configuration), ``metrics.csv`` (scalar logs)
and ``checkpoints/latest.pt``. A checkpoint holds everything a run needs to continue exactly as
if it had never stopped: model (with normalizer statistics), optimizer, scheduler, step, every
RNG state, the configuration and the systems the model was trained on.

Distributed data parallel: launch the same command under ``torchrun --nproc_per_node K -m gndesign
train ...``; each process samples its own batches (gloo on CPU, nccl on GPU), gradients are
averaged, and rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from gndesign import __version__
from gndesign.datasets.formats import dataset_format
from gndesign.datasets.params import PARAM_KEYS
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import ConfigError, GndesignError
from gndesign.graphs import GraphBuilder
from gndesign.io import atomic_path, atomic_write_text
from gndesign.kinematics import integrate_qpos
from gndesign.simulator import ForwardModel, ModelConfig, SystemSpec, Transitions, build_model

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "gndesign-checkpoint-v1"


@dataclass
class TrainConfig:
    """Optimization settings (saved with every run and checkpoint)."""

    steps: int = 20000  # optimizer steps (also the learning-rate schedule's length)
    minutes: float | None = None  # stop after this wall-clock time; the learning rate then decays over it
    batch_size: int = 256  # transitions per step and process
    lr: float = 1e-3
    lr_final: float = 1e-4  # exponential decay from lr to lr_final over `steps` (or `minutes`)
    grad_clip: float = 1.0
    vel_noise: float = 0.005  # input noise on qvel, as a fraction of each dof's velocity std
    pos_noise: float = 0.1  # input noise on qpos, as a fraction of each dof's (velocity std x dt)
    # Noise-correct the position target too (True), or let position noise only perturb the inputs
    # (False: the position correction it cannot predict would otherwise dominate the loss).
    correct_pos_noise: bool = False
    unroll_steps: int = 1  # > 1: multi-step loss through the model's own predictions
    val_fraction: float = 0.1
    stats_transitions: int = 20000  # transitions used to accumulate normalization statistics
    seed: int = 0
    log_every: int = 100
    eval_every: int = 1000
    checkpoint_every: int = 1000
    threads: int | None = None  # torch intra-op threads (None: torch's default)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "unroll_steps", "log_every", "eval_every", "checkpoint_every",
                     "stats_transitions"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"train.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0 or self.lr_final <= 0:
            raise ConfigError("train.lr and train.lr_final must be positive")


@dataclass
class RunConfig:
    """Everything a training run is: data, model and optimization."""

    data: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        unknown = set(d) - {"data", "model", "train"}
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; expected data, model, train")
        return cls(data=list(d.get("data") or []), model=_dataclass_from(ModelConfig, d.get("model") or {}, "model"),
                   train=_dataclass_from(TrainConfig, d.get("train") or {}, "train"))


def _dataclass_from(cls, values: dict, section: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            raise ConfigError(f"unknown option {section}.{k}; valid options: {', '.join(names)}")
    return cls(**{k: _coerce(names[k], v, f"{section}.{k}") for k, v in values.items()})


def _coerce(f: dataclasses.Field, value: Any, where: str):
    """Convert a YAML / command-line value to the field's type."""
    default = f.default
    if value is None:
        return None
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            return int(value)
        if f.type == "int | None":
            return int(value)
        if isinstance(default, float) or f.type == "float | None":
            return float(value)
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: cannot read {value!r} as {type(default).__name__}") from None


def parse_value(text: str):
    """A command-line value as YAML reads it (numbers, booleans, strings)."""
    return yaml.safe_load(text)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                data: list[str | os.PathLike] | None = None):
    """A :class:`RunConfig` from defaults, an optional YAML file and ``section.key=value`` overrides.

    ``data``: the training data directories (they replace the file's ``data:``). When they (or the
    file's) are particle datasets, the result is a
    :class:`gndesign.particles.ParticleRunConfig` instead (its own model options and defaults).
    """
    raw = _read_config(path, overrides)
    if data is not None:
        raw["data"] = [str(d) for d in data]
    if raw.get("data") and dataset_format(raw["data"][0]) == "particles":
        from gndesign.particles import ParticleRunConfig

        cfg = ParticleRunConfig.from_dict(raw)
        cfg.validate()
        return cfg
    cfg = RunConfig.from_dict(raw)
    cfg.model.validate()
    cfg.train.validate()
    return cfg


def _read_config(path: str | os.PathLike | None, overrides: list[str] | None) -> dict:
    """The raw ``{section: {key: value}}`` of a YAML file with overrides applied."""
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping with sections data, model, train")
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.lr=3e-4)")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})[name] = parse_value(value)
    return raw


# ----------------------------------------------------------------------------------- data
class TransitionSampler:
    """Uniform random (sequences of) transitions from one or more datasets, as torch tensors.

    Args:
        datasets: loaded datasets (possibly of different systems).
        episodes: for each dataset, the episode indices to draw from.
        dtype: tensor dtype of the states.
    """

    def __init__(self, datasets: list[TrajectoryDataset], episodes: list[np.ndarray], dtype=torch.float32):
        self.datasets = datasets
        self.tensors = []
        for ds, eps in zip(datasets, episodes, strict=True):
            eps = np.asarray(eps, dtype=np.int64)
            self.tensors.append({
                "qpos": torch.as_tensor(ds.qpos[eps], dtype=dtype),
                "qvel": torch.as_tensor(ds.qvel[eps], dtype=dtype),
                "action": torch.as_tensor(ds.action[eps], dtype=dtype),
                "params": {k: torch.as_tensor(ds.params[k][eps], dtype=dtype) for k in PARAM_KEYS},
            })
        self.sizes = [t["action"].shape[0] * t["action"].shape[1] for t in self.tensors]

    def sequences(self, d: int, ep: torch.Tensor, t0: torch.Tensor, length: int) -> dict:
        """States ``[B, length+1, ...]``, actions ``[B, length, nu]`` and params of dataset ``d``."""
        T = self.tensors[d]
        steps = t0[:, None] + torch.arange(length + 1)
        return {"system": self.datasets[d].system,
                "qpos": T["qpos"][ep[:, None], steps], "qvel": T["qvel"][ep[:, None], steps],
                "action": T["action"][ep[:, None], steps[:, :-1]],
                "params": {k: v[ep] for k, v in T["params"].items()}}

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> list[dict]:
        """``batch_size`` sequences of ``length`` transitions, grouped by dataset."""
        T_lens = [t["action"].shape[1] for t in self.tensors]
        starts = torch.tensor([n // T * (T - length + 1) for n, T in zip(self.sizes, T_lens, strict=True)])
        if (starts <= 0).any():
            raise ConfigError(f"episodes are shorter than the unroll length {length}")
        pick = torch.multinomial(starts.double(), batch_size, replacement=True, generator=generator)
        out = []
        for d in range(len(self.tensors)):
            n = int((pick == d).sum())
            if n == 0:
                continue
            n_ep = self.tensors[d]["action"].shape[0]
            ep = torch.randint(n_ep, (n,), generator=generator)
            t0 = torch.randint(T_lens[d] - length + 1, (n,), generator=generator)
            out.append(self.sequences(d, ep, t0, length))
        return out


def noise_scales(ds: TrajectoryDataset, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dof input-noise standard deviations ``(qpos [nv], qvel [nv])`` of a dataset."""
    vel_std = torch.as_tensor(np.asarray(ds.stats["qvel"]["std"]), dtype=torch.float32)
    return cfg.pos_noise * vel_std * ds.control_timestep, cfg.vel_noise * vel_std


def add_noise(model: ForwardModel, seq: dict, scales: tuple[torch.Tensor, torch.Tensor],
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Perturb the first state of each sequence: positions in the tangent space (so quaternions
    stay unit), velocities additively."""
    q, v = seq["qpos"][:, 0], seq["qvel"][:, 0]
    pos_std, vel_std = scales
    dq = torch.randn(v.shape, generator=generator, dtype=v.dtype) * pos_std
    dv = torch.randn(v.shape, generator=generator, dtype=v.dtype) * vel_std
    return integrate_qpos(model.tree(seq["system"]), q, dq, 1.0), v + dv


def unrolled_loss(model: ForwardModel, seqs: list[dict], start: list[tuple[torch.Tensor, torch.Tensor]],
                  net=None, correct_pos_noise: bool = False) -> torch.Tensor:
    """Mean normalized loss over ``length`` steps, each step starting from the model's own
    prediction of the previous one (plain one-step loss for length 1).

    ``net`` is the module to call (a DDP wrapper of ``model`` in distributed runs)."""
    net = net or model
    length = seqs[0]["action"].shape[1]
    states = list(start)
    total = 0.0
    for k in range(length):
        batches = [Transitions(s["system"], q, v, s["action"][:, k], s["params"], s["qpos"][:, k + 1],
                               s["qvel"][:, k + 1], None if correct_pos_noise or k else s["qpos"][:, 0])
                   for s, (q, v) in zip(seqs, states, strict=True)]
        loss, nxt = net(batches, k + 1 < length)
        total = total + loss
        states = nxt
    return total / length


# ----------------------------------------------------------------------------------- checkpoints
def rng_state(generators: dict[str, torch.Generator]) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "generators": {k: g.get_state() for k, g in generators.items()}}


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


def save_checkpoint(path: str | os.PathLike, model: ForwardModel, config: RunConfig, step: int,
                    optimizer=None, scheduler=None, rng: dict | None = None, extra: dict | None = None) -> None:
    """Write a checkpoint atomically (a temporary file renamed into place)."""
    blob = {
        "format": CHECKPOINT_FORMAT, "kind": "forward", "gndesign_version": __version__, "step": step,
        "config": config.to_dict(), "model": model.state_dict(), "systems": model.describe()["systems"],
        "feature_names": GraphBuilder.feature_names(),
        "signatures": {s: model.tree(s).signature() for s in model.trained_systems},
        "optimizer": optimizer.state_dict() if optimizer else None,
        "scheduler": scheduler.state_dict() if scheduler else None,
        "rng": rng, "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a checkpoint for inference only (no optimizer, scheduler or RNG state: about a third
    of the size). It loads with :func:`load_model` like any checkpoint but cannot be resumed."""
    blob = read_checkpoint(src)
    blob.update(optimizer=None, scheduler=None, rng=None)
    blob["extra"] = dict(blob.get("extra") or {}, exported_from_step=blob["step"])
    with atomic_path(dst) as tmp:
        torch.save(blob, tmp)
    return Path(dst)


def read_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise GndesignError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a broken file
        raise GndesignError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]} "
                            "(the file is truncated or not a gndesign checkpoint)") from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise GndesignError(f"{path} is not a gndesign checkpoint (expected format {CHECKPOINT_FORMAT})")
    return blob


def load_model(path: str | os.PathLike, system: str | None = None, allow_new_system: bool = False,
               mjcf_sha256: str | None = None) -> tuple[ForwardModel, dict]:
    """A trained model (in eval mode) and its checkpoint dict.

    Args:
        system: the system it will be used on; must be one it was trained on unless
            ``allow_new_system`` (graph networks only, e.g. zero-shot swimmers).
        mjcf_sha256: if given with ``system``, the system's MJCF must be the one trained on.

    Raises:
        GndesignError: the checkpoint is unreadable, its features differ from this version's, or
            the system does not match (the message names the mismatch).
    """
    blob = read_checkpoint(path)
    if blob.get("kind", "forward") != "forward":
        loader = "gndesign.cgns.load_cgns_model" if blob["kind"] == "cgns" else "gndesign.particles.load_particle_model"
        raise GndesignError(f"checkpoint {path} holds a {blob['kind']!r} model, not a forward model of an "
                            f"articulated system (load it with {loader})")
    names = GraphBuilder.feature_names()
    for kind, cols in blob["feature_names"].items():
        if cols != names[kind]:
            diff = next((f"{a!r} vs {b!r}" for a, b in zip(cols, names[kind], strict=False) if a != b),
                        f"{len(cols)} vs {len(names[kind])} columns")
            raise GndesignError(f"checkpoint {path} has incompatible {kind} features ({diff}): it was "
                                "written by another gndesign version; retrain it")
    cfg = RunConfig.from_dict(blob["config"])
    specs = [SystemSpec.from_dict(d) for d in blob["systems"]]
    model = build_model(cfg.model, specs)
    model.load_state_dict(blob["model"])
    model.eval()
    trained = [s.name for s in specs]
    if system is not None and system not in trained:
        if not allow_new_system or cfg.model.kind != "gn":
            raise GndesignError(f"checkpoint {path} was trained on {trained}, not on {system!r}"
                                + ("" if cfg.model.kind == "gn" else " (an MLP cannot serve another system)"))
    if system is not None and mjcf_sha256 is not None and system in trained:
        spec = specs[trained.index(system)]
        if hashlib.sha256(spec.mjcf.encode()).hexdigest() != mjcf_sha256:
            raise GndesignError(f"checkpoint {path} was trained on a different {system!r} model "
                                "(its MJCF differs from this data's)")
    return model, blob


PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A checkpoint path from a path or ``pretrained:NAME`` (shipped in ``gndesign/pretrained``)."""
    text = str(spec)
    if text.startswith("pretrained:"):
        name = text.split(":", 1)[1]
        path = PRETRAINED_DIR / f"{name}.pt"
        if not path.is_file():
            names = sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))
            raise GndesignError(f"no pretrained model {name!r}; available: {', '.join(names) or 'none'}")
        return path
    return Path(text)


def held_out_episodes(blob: dict, ds: TrajectoryDataset, which: str = "auto") -> tuple[np.ndarray, str]:
    """The episodes to evaluate on: the run's validation split when the checkpoint trained on this
    dataset (same system and MJCF), else every episode."""
    tc = _dataclass_from(TrainConfig, blob["config"]["train"], "train")
    trained_here = any(Path(p).resolve() == ds.path.resolve() for p in blob["config"]["data"])
    if which == "all" or (which == "auto" and not trained_here):
        return np.arange(ds.num_episodes), "all"
    val = ds.split(tc.val_fraction, tc.seed)[1]
    if len(val) == 0:
        raise GndesignError("the run kept no validation episodes (train.val_fraction=0): use --episodes all")
    return val, "validation"


def system_spec(ds: TrajectoryDataset) -> SystemSpec:
    return SystemSpec(name=ds.system, mjcf=ds.mjcf, control_timestep=ds.control_timestep, assets=ds.assets)


# ----------------------------------------------------------------------------------- training
def _distributed() -> tuple[int, int]:
    """(rank, world size), initializing the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


class TrainingTask:
    """What :func:`run_training` needs from one kind of model (articulated forward models,
    particle simulators): the shared loop owns seeding, the optimizer and learning-rate schedule,
    resume, logging, checkpoints and DDP; a task owns data, model, statistics and losses.

    ``config`` must have ``.train`` (a :class:`TrainConfig`) and ``.to_dict()``. The methods are
    called in this order: :meth:`prepare` (load data), then, after seeding, :meth:`build_model`,
    then :meth:`init_statistics` (fresh runs) or :meth:`check_resume` (resumed runs), then
    :meth:`loss` once per step; :meth:`validation_loss` and :meth:`save_checkpoint` when due.
    """

    config: Any

    def prepare(self) -> None:
        """Load the data (before seeding: it must not consume the global RNGs)."""

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def init_statistics(self, rank: int) -> None:
        """Accumulate normalization statistics (fresh runs only; the same on every rank)."""

    def check_resume(self, blob: dict) -> None:
        """Refuse a checkpoint of another kind of run (called before anything is loaded)."""

    def loss(self, model: torch.nn.Module, net: torch.nn.Module, gens: dict[str, torch.Generator]) -> torch.Tensor:
        """One training batch's loss (``net`` is ``model`` or its DDP wrapper)."""
        raise NotImplementedError

    def validation_loss(self, model: torch.nn.Module) -> float | None:
        return None

    def save_checkpoint(self, path: Path, model: torch.nn.Module, step: int, optimizer, scheduler, rng: dict) -> None:
        raise NotImplementedError


class _ForwardTask(TrainingTask):
    """Articulated forward models (:class:`ForwardModel`) on trajectory datasets."""

    def __init__(self, config: RunConfig):
        self.config = config

    def prepare(self) -> None:
        cfg, tc = self.config, self.config.train
        self.datasets = [TrajectoryDataset.load(p) for p in cfg.data]
        self.systems: dict[str, SystemSpec] = {}
        for ds in self.datasets:
            spec = system_spec(ds)
            if ds.system in self.systems and self.systems[ds.system].mjcf != spec.mjcf:
                raise GndesignError(f"two datasets are named {ds.system!r} but hold different models")
            self.systems[ds.system] = spec
        splits = [ds.split(tc.val_fraction, tc.seed) for ds in self.datasets]
        self.train_set = TransitionSampler(self.datasets, [s[0] for s in splits])
        self.val_set = TransitionSampler(self.datasets, [s[1] for s in splits]) if tc.val_fraction > 0 else None
        self.scales = {ds.system: noise_scales(ds, tc) for ds in self.datasets}

    def build_model(self) -> ForwardModel:
        return build_model(self.config.model, list(self.systems.values()))

    def init_statistics(self, rank: int) -> None:
        # Normalization statistics from a fixed sample of noised training transitions (the inputs
        # and noise-corrected targets the model is trained on), the same on every rank.
        tc, model = self.config.train, self.model
        stat_gen = torch.Generator().manual_seed(tc.seed + 12345)
        for seq in self.train_set.sample(tc.stats_transitions, 1, stat_gen):
            q, v = add_noise(model, seq, self.scales[seq["system"]], stat_gen)
            model.accumulate_statistics(Transitions(seq["system"], q, v, seq["action"][:, 0], seq["params"],
                                                    seq["qpos"][:, 1], seq["qvel"][:, 1],
                                                    None if tc.correct_pos_noise else seq["qpos"][:, 0]))

    def check_resume(self, blob: dict) -> None:
        if blob.get("kind", "forward") != "forward":
            raise GndesignError(f"the checkpoint to resume holds a {blob['kind']!r} model, not a forward model")

    def loss(self, model, net, gens) -> torch.Tensor:
        tc = self.config.train
        seqs = self.train_set.sample(tc.batch_size, tc.unroll_steps, gens["sample"])
        start = [add_noise(model, s, self.scales[s["system"]], gens["noise"]) for s in seqs]
        return unrolled_loss(model, seqs, start, net, tc.correct_pos_noise)

    def validation_loss(self, model) -> float | None:
        return None if self.val_set is None else validation_loss(model, self.val_set)

    def save_checkpoint(self, path, model, step, optimizer, scheduler, rng) -> None:
        save_checkpoint(path, model, self.config, step, optimizer, scheduler, rng)


def train(config, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
          max_new_steps: int | None = None) -> dict:
    """Train a forward model; returns a summary (final losses, steps, throughput).

    With ``resume``, continues from ``run_dir/checkpoints/latest.pt`` and reproduces the
    uninterrupted run (same data order, noise and optimizer state). ``max_new_steps`` stops this
    invocation early, as a preemption would (the run can be resumed).

    A particle configuration (:class:`gndesign.particles.ParticleRunConfig`, what
    :func:`load_config` returns for particle data), or a :class:`RunConfig` whose data are particle
    datasets, trains a particle simulator (:func:`gndesign.particles.train_particles`).
    """
    from gndesign.particles import ParticleRunConfig, as_particle_config, train_particles

    if isinstance(config, ParticleRunConfig) or (config.data and dataset_format(config.data[0]) == "particles"):
        return train_particles(as_particle_config(config), run_dir, resume, progress, max_new_steps)
    cfg = config
    cfg.model.validate()
    cfg.train.validate()
    if not cfg.data:
        raise ConfigError("no training data: pass --data DIR [DIR ...] or set data: in the config")
    return run_training(_ForwardTask(cfg), run_dir, resume, progress, max_new_steps)


def run_training(task: TrainingTask, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
                 max_new_steps: int | None = None) -> dict:
    """The training loop shared by every kind of model (see :class:`TrainingTask`): Adam with
    gradient clipping, exponential learning-rate decay over ``train.steps`` (or ``train.minutes``),
    CSV metrics, atomic checkpoints with the full training state, exact resume, DDP."""
    tc = task.config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    rank, world = _distributed()
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "latest.pt"
    if not resume and ckpt_path.exists():
        raise GndesignError(f"{run_dir} already holds a run: pass --resume to continue it or choose another --out")
    if resume and not ckpt_path.exists():
        raise GndesignError(f"nothing to resume: {ckpt_path} does not exist")
    task.prepare()

    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    random.seed(tc.seed)
    model = task.model = task.build_model()
    gens = {"sample": torch.Generator().manual_seed(tc.seed * 1000 + rank),
            "noise": torch.Generator().manual_seed(tc.seed * 1000 + 500 + rank)}
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    decay = (tc.lr_final / tc.lr) ** (1.0 / tc.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: decay ** min(s, tc.steps))
    step = 0
    if resume:
        blob = read_checkpoint(ckpt_path)
        task.check_resume(blob)
        if blob["optimizer"] is None:
            raise GndesignError(f"{ckpt_path} is an exported (inference-only) checkpoint and cannot be resumed")
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        step = int(blob["step"])
        set_rng_state(blob["rng"], gens)
        log.info("resumed %s at step %d", run_dir, step)
    else:
        task.init_statistics(rank)
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(task.config.to_dict(), sort_keys=False))

    net = model
    if world > 1:
        # The last processor step's global update feeds no decoder: those weights get no gradient.
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    metrics_path = run_dir / "metrics.csv"
    start_time, start_step = time.time(), step
    bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank != 0, desc="train", unit="step")
    summary: dict[str, Any] = {}
    last_loss = float("nan")
    stop_at = tc.steps if max_new_steps is None else min(tc.steps, step + max_new_steps)
    while step < stop_at:
        if tc.minutes is not None and time.time() - start_time > 60 * tc.minutes:
            log.info("stopping after %.1f minutes (train.minutes)", tc.minutes)
            break
        model.train()
        loss = task.loss(model, net, gens)
        if not torch.isfinite(loss):
            raise GndesignError(f"training diverged at step {step} (loss {float(loss)}): lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        scheduler.step()
        if tc.minutes is not None:
            # A wall-clock budget anneals over the budget (whichever of steps and time runs out first).
            progress_frac = max(step / tc.steps, (time.time() - start_time) / (60 * tc.minutes))
            for group in optimizer.param_groups:
                group["lr"] = tc.lr * (tc.lr_final / tc.lr) ** min(progress_frac, 1.0)
        step += 1
        last_loss = loss.item()
        bar.update(1)
        if rank == 0 and (step % tc.log_every == 0 or step == tc.steps):
            row = {"step": step, "time_s": round(time.time() - start_time, 3), "train_loss": last_loss,
                   "lr": optimizer.param_groups[0]["lr"],
                   "graphs_per_s": round((step - start_step) * tc.batch_size * tc.unroll_steps * world
                                         / max(time.time() - start_time, 1e-9), 1)}
            if step % tc.eval_every == 0 or step == tc.steps:
                val = task.validation_loss(model)
                if val is not None:
                    row["val_loss"] = val
            _append_csv(metrics_path, row)
            bar.set_postfix(loss=f"{last_loss:.4f}", **({"val": f"{row['val_loss']:.4f}"} if "val_loss" in row else {}))
            summary.update(row)
        if rank == 0 and (step % tc.checkpoint_every == 0 or step == tc.steps):
            task.save_checkpoint(ckpt_path, model, step, optimizer, scheduler, rng_state(gens))
    bar.close()
    if rank == 0:
        task.save_checkpoint(ckpt_path, model, step, optimizer, scheduler, rng_state(gens))
        summary.update({"step": step, "train_loss": last_loss, "seconds": time.time() - start_time})
        val = task.validation_loss(model)
        if val is not None:
            summary["val_loss"] = val
    if world > 1:
        dist.barrier()
    return summary


@torch.no_grad()
def validation_loss(model: ForwardModel, sampler: TransitionSampler, max_transitions: int = 4096) -> float:
    """One-step normalized loss (no input noise) on a fixed subset of held-out transitions."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    seqs = sampler.sample(max_transitions, 1, gen)
    batches = [Transitions(s["system"], s["qpos"][:, 0], s["qvel"][:, 0], s["action"][:, 0], s["params"],
                           s["qpos"][:, 1], s["qvel"][:, 1]) for s in seqs]
    return float(model.loss(batches))


METRICS_COLUMNS = ["step", "time_s", "train_loss", "val_loss", "lr", "graphs_per_s"]


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
        if new:
            w.writeheader()
        w.writerow(row)
