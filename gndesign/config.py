"""Configuration: the dataclass configs of every model family and their YAML / ``--set`` parsing.

A run is one :class:`RunConfig`: its ``data`` directories, a ``model`` section (a graph-network
:class:`ModelConfig` for articulated systems, a :class:`ParticleModelConfig` for particle data),
the optimization (``train``), a ``solver`` for a constraint-based simulator (C-GNS) and a ``policy``
for a policy; these sections say which model family a run trains (:attr:`RunConfig.family`). It is
built from defaults, an optional YAML file (``{section: {key: value}}``) and ``section.key=value``
overrides (:func:`load_config`), saved next to every run and inside every checkpoint, and read
back by :meth:`RunConfig.from_dict`."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from gndesign.config_sections import PolicyConfig, SolverConfig
from gndesign.datasets.formats import dataset_format
from gndesign.errors import ConfigError, DatasetError
from gndesign.io import read_yaml_mapping
from gndesign.nn import AGGREGATIONS

PARTICLES = "particles"  # model.kind of a particle simulator


@dataclass
class ModelConfig:
    """Architecture of a forward model of articulated systems (saved with every checkpoint)."""

    kind: str = "gn"  # "gn" (graph network) or "mlp" (flat baseline)
    latent_size: int = 64  # 64 trains ~2x faster than 128 on CPU and was more accurate per minute
    mlp_hidden_size: int = 64
    mlp_layers: int = 2
    # None: the deepest kinematic tree's depth (at least 2), resolved when the model is built and
    # saved resolved. Fewer steps than the depth leave a joint blind to the far end of its chain:
    # on swimmer6 (depth 6) 2 steps gave 2.6x the validation loss of 4 at equal optimizer steps.
    message_passing_steps: int | None = None
    shared_weights: bool = False
    # Each system passes messages to its own tree's depth only (at least 2, at most
    # message_passing_steps; the first blocks of the processor): in a model of many systems a
    # pendulum then costs what it costs alone instead of the deepest tree's steps.
    per_system_depth: bool = False
    aggregation: str = "sum"
    std_epsilon: float = 1e-3
    # Each limited hinge or slide tells its edges how far it is past either end of its range, now
    # and after a step at its current velocity (joint units; zero inside). On cartpole (the cart is
    # past an end of its rail in 25% of the data; limit hits within a step made 70% of the one-step
    # loss) it cut the one-step loss 2.5x, but the rollouts got worse: off by default (README).
    limit_features: bool = False
    # The angle of a hinge without limit or spring is left out of its coordinates (sine and cosine
    # stay): the motion depends on it only through them, and a spinning link's angle grows past any
    # value seen in training. Off by default, so older checkpoints compute what they were trained on.
    periodic_hinges: bool = False
    # Targets normalized per joint edge of each trained system (as the MLP normalizes per dof), not
    # per joint type: acrobot's shoulder accelerations spread 2.4x narrower than its elbow's, so
    # pooled over its hinges the loss weighs the shoulder's errors, relative to the elbow's, 6x less
    # than the MLP's loss does.
    # Systems added later (zero-shot) take the per-type statistics (of the nearest trained system).
    edge_target_stats: bool = False

    def validate(self) -> None:
        if self.kind not in ("gn", "mlp"):
            raise ConfigError(f"model.kind must be 'gn' or 'mlp', got {self.kind!r}")
        for name in ("latent_size", "mlp_hidden_size", "mlp_layers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.message_passing_steps is not None and self.message_passing_steps < 0:
            raise ConfigError("model.message_passing_steps must be >= 0 (or unset: the kinematic trees' depth)")
        if self.per_system_depth and self.kind != "gn":
            raise ConfigError("model.per_system_depth is an option of the graph network (model.kind=gn)")
        if self.edge_target_stats and self.kind != "gn":
            raise ConfigError("model.edge_target_stats is an option of the graph network (model.kind=gn); "
                              "the MLP normalizes its targets per dof already")


NETS = ("gn", "egnn")  # model.net: the plain graph network, the E(n)-equivariant network (gndesign.equivariant)


@dataclass
class ParticleModelConfig:
    """Architecture and graph construction of a particle simulator (saved with checkpoints)."""

    kind: str = PARTICLES
    net: str = "gn"  # egnn: equivariant, gravity and walls as explicit inputs; a forward predictor only
    latent_size: int = 64
    mlp_hidden_size: int = 64
    mlp_layers: int = 2
    message_passing_steps: int = 3
    shared_weights: bool = False
    aggregation: str = "sum"
    history: int = 5  # C: velocities per particle node
    radius: float = 3.0  # connectivity radius R, in particle radii
    obstacle_spacing: float = 1.0  # largest gap between obstacle nodes, in particle radii
    # Obstacle nodes per segment (a fixed count: the graph's size does not depend on the design);
    # 0: chosen from the training data's longest segment and obstacle_spacing, then saved resolved.
    obstacle_points: int = 0
    std_epsilon: float = 1e-9  # smallest normalizer std (frame units are small: keep it tiny)

    def validate(self) -> None:
        if self.kind != PARTICLES or self.net not in NETS:
            raise ConfigError(f"model.kind must be {PARTICLES!r} and model.net one of {', '.join(NETS)} for "
                              f"particle data, got {self.kind!r}, {self.net!r}")
        for name in ("latent_size", "mlp_hidden_size", "mlp_layers", "history"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.message_passing_steps < 0 or self.obstacle_points < 0:
            raise ConfigError("model.message_passing_steps and model.obstacle_points must be >= 0")
        if not self.radius > 0 or not self.obstacle_spacing > 0:
            raise ConfigError("model.radius and model.obstacle_spacing must be positive")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"model.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")


NBODY = "nbody"  # model.kind of an N-body message-passing model
MESSAGE_KINDS = ("standard", "l1", "bottleneck", "kl")


@dataclass
class NBodyModelConfig:
    """A message-passing model of N-body systems (Cranmer et al. 2020; :mod:`gndesign.nbody_model`)
    and its message sparsity (saved with checkpoints). ``net``: the architecture (:data:`NETS`)."""

    kind: str = NBODY
    net: str = "gn"
    message: str = "standard"  # standard, l1 (L1 on messages), bottleneck (size = dim), kl (variational)
    message_size: int = 100  # ignored by bottleneck (the spatial dimension)
    l1_weight: float = 1e-2  # weight of the mean L1 norm of the messages (message=l1)
    kl_weight: float = 1e-2  # weight of the messages' KL divergence to N(0, 1) (message=kl)
    hidden_size: int = 128
    mlp_layers: int = 3
    layers: int = 2  # message-passing rounds (net=egnn)
    # acceleration: phi_v(m_i, q_i, sum) predicts a_i (Cranmer et al.); force: phi_v(sum) predicts the
    # net force and a_i = F_i / m_i (Newton's second law built in; messages must carry pair forces).
    readout: str = "acceleration"
    std_epsilon: float = 1e-9

    def validate(self) -> None:
        if self.kind != NBODY or self.net not in NETS:
            raise ConfigError(f"model.kind must be {NBODY!r} and model.net one of {', '.join(NETS)} for "
                              f"N-body data, got {self.kind!r}, {self.net!r}")
        bad = [f"model.{k}={v}" for k, v, ok in (("message", self.message, "standard"),
                                                  ("readout", self.readout, "acceleration")) if v != ok]
        if self.net == "egnn" and bad:
            raise ConfigError(f"{' and '.join(bad)} needs model.net=gn: the equivariant network (model.net=egnn) "
                              "has no sparse messages or force readout")
        if self.message not in MESSAGE_KINDS or self.readout not in ("acceleration", "force"):
            raise ConfigError(f"model.message must be one of {', '.join(MESSAGE_KINDS)} and model.readout "
                              f"acceleration or force, got {self.message!r}, {self.readout!r}")
        for name in ("message_size", "hidden_size", "mlp_layers", "layers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.l1_weight < 0 or self.kl_weight < 0:
            raise ConfigError("model.l1_weight and model.kl_weight must be >= 0")


@dataclass
class TrainConfig:
    """Optimization settings (saved with every run and checkpoint)."""

    steps: int = 20000  # optimizer steps (also the learning-rate schedule's length)
    minutes: float | None = None  # stop after this wall-clock time; the learning rate then decays over it
    batch_size: int = 256  # transitions per step and process
    lr: float = 1e-3
    lr_final: float = 1e-4  # exponential decay from lr to lr_final over `steps` (or `minutes`)
    # An exponential moving average of the weights with this decay per step (None: off): checkpoints
    # then hold the average as the model (the raw weights only to resume) and validation scores it.
    ema_decay: float | None = None
    grad_clip: float = 1.0
    vel_noise: float = 0.005  # input noise on qvel, as a fraction of each dof's velocity std
    pos_noise: float = 0.1  # input noise on qpos, as a fraction of each dof's (velocity std x dt)
    # Noise-correct the position target too (True), or let position noise only perturb the inputs
    # (False: the position correction it cannot predict would otherwise dominate the loss).
    correct_pos_noise: bool = False
    unroll_steps: int = 1  # > 1: multi-step loss through the model's own predictions
    # Several datasets (systems): each step's batch comes from this many of them (None: from all).
    # 1 makes a step cost one system's pass, as in single-system training.
    datasets_per_batch: int | None = None
    # {system: batch size} for batches drawn from one dataset (train.datasets_per_batch=1): cheap small
    # graphs get larger batches in a model shared with large ones (e.g. {pendulum: 256}); others batch_size.
    system_batch_size: dict | None = None
    # Train on the log of each batch's loss (needs train.datasets_per_batch=1): its gradient is the
    # loss's gradient over the loss, so a system whose normalized errors are 100x smaller than another's
    # (pendulum's against cheetah's) moves the shared weights by its relative error. Measured on the
    # multi-system recipe (README): the small trees' one-step loss fell, cheetah's rollouts got worse.
    balance_systems: bool = False
    val_fraction: float = 0.1
    stats_transitions: int = 20000  # transitions used to accumulate normalization statistics
    seed: int = 0
    log_every: int = 100
    eval_every: int = 1000
    checkpoint_every: int = 1000
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    # Where the model trains: "cpu", "cuda", "cuda:N" or "auto" (a GPU when torch sees one). Data
    # stay in host memory; each step's batch moves to the device; checkpoints load on any device.
    device: str = "cpu"

    def validate(self) -> None:
        for name in ("steps", "batch_size", "unroll_steps", "log_every", "eval_every", "checkpoint_every",
                     "stats_transitions"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"train.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0 or self.lr_final <= 0:
            raise ConfigError(f"train.lr and train.lr_final must be positive, got {self.lr} and {self.lr_final}")
        if self.grad_clip <= 0 or self.vel_noise < 0 or self.pos_noise < 0:
            raise ConfigError(f"train.grad_clip must be positive and train.vel_noise, train.pos_noise >= 0, got "
                              f"{self.grad_clip}, {self.vel_noise}, {self.pos_noise}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in (0, 1), e.g. 0.999 (an average over about the last "
                              f"1,000 steps), or unset (no average), got {self.ema_decay}")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"train.minutes must be a positive number of minutes, got {self.minutes:g} "
                              "(leave it unset to train for train.steps)")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(f"train.threads must be positive, got {self.threads}")
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ConfigError(f"train.device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        sizes = self.system_batch_size
        if sizes is not None and (not isinstance(sizes, dict) or self.datasets_per_batch != 1 or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
                for k, v in sizes.items())):
            raise ConfigError(f"train.system_batch_size must map system names to positive integers and needs "
                              f"train.datasets_per_batch=1 (one system per batch), got {sizes!r} with "
                              f"train.datasets_per_batch={self.datasets_per_batch}")
        if self.balance_systems and self.datasets_per_batch != 1:
            raise ConfigError(f"train.balance_systems needs train.datasets_per_batch=1 (each batch from one system, "
                              f"whose loss it balances), got train.datasets_per_batch={self.datasets_per_batch}")
        if self.datasets_per_batch is not None and self.datasets_per_batch <= 0:
            raise ConfigError(f"train.datasets_per_batch must be positive, got {self.datasets_per_batch} "
                              "(leave it unset to draw every batch from all datasets)")


@dataclass
class ParticleTrainConfig(TrainConfig):
    """:class:`TrainConfig` with particle defaults: ``batch_size`` counts graphs (frames of ~100
    particles), ``stats_transitions`` frames; ``vel_noise`` is the standard deviation of the last
    input velocity's random-walk noise as a fraction of the data's velocity std; ``pos_noise`` and
    ``correct_pos_noise`` are unused."""

    steps: int = 20000
    batch_size: int = 4
    lr: float = 1e-3
    lr_final: float = 1e-5
    vel_noise: float = 0.03
    stats_transitions: int = 2000
    log_every: int = 100
    eval_every: int = 500
    checkpoint_every: int = 500


@dataclass
class NBodyTrainConfig(TrainConfig):
    """:class:`TrainConfig` with N-body defaults: ``batch_size`` counts frames (graphs of N
    particles); the noise and statistics options are unused (the targets are the true accelerations)."""

    steps: int = 3000
    batch_size: int = 64
    vel_noise: float = 0.0
    pos_noise: float = 0.0
    eval_every: int = 500
    checkpoint_every: int = 500


SECTIONS = ("data", "model", "solver", "train", "policy")


def holds(path: str, fmt: str) -> bool:
    """Whether ``path`` is a dataset of format ``fmt``; a directory that is gone (the data of a
    checkpoint's run, moved since) reads as not, so a saved config still parses: training checks the data."""
    try:
        return dataset_format(path) == fmt
    except DatasetError:
        return False


@dataclass
class RunConfig:
    """Everything a training run is: ``data``, ``model`` (a :class:`ParticleModelConfig` for
    particle data, else a :class:`ModelConfig`), ``train`` and, for a C-GNS only, ``solver``."""

    data: list[str] = field(default_factory=list)
    model: ModelConfig | ParticleModelConfig | NBodyModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    solver: SolverConfig | None = None
    policy: PolicyConfig | None = None  # a policy learned through a model (family "policy")

    @property
    def particles(self) -> bool:
        return isinstance(self.model, ParticleModelConfig)

    @property
    def family(self) -> str:
        """The model family the run trains: ``forward``, ``particles``, ``cgns-particles`` or
        ``cgns-articulated`` (see :mod:`gndesign.families`)."""
        if self.policy is not None:
            return "policy"
        if isinstance(self.model, NBodyModelConfig):
            return NBODY
        if self.solver is None:
            return PARTICLES if self.particles else "forward"
        return "cgns-particles" if self.particles else "cgns-articulated"

    def to_dict(self) -> dict:
        d = asdict(self)
        for section in ("solver", "policy"):
            if getattr(self, section) is None:
                del d[section]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], particles: bool | None = None, cgns: bool | None = None) -> RunConfig:
        """A configuration from its ``{section: {key: value}}`` form (a YAML file, a checkpoint's).

        ``particles``: the model section is a particle simulator's (None: when ``model.kind`` is
        ``particles`` or the first data directory holds a particle dataset). ``cgns``: the run has a
        ``solver`` section (None: when the dict has one)."""
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; expected {', '.join(SECTIONS)}")
        data = [str(p) for p in d.get("data") or []]
        model = dict(d.get("model") or {})
        if model.get("kind") == NBODY or ("kind" not in model and data and holds(data[0], NBODY)):
            return cls(data=data, model=dataclass_from(NBodyModelConfig, model, "model"),
                       train=dataclass_from(NBodyTrainConfig, d.get("train") or {}, "train"))
        if particles is None:
            particles = model.get("kind") == PARTICLES or bool(data and holds(data[0], PARTICLES))
        if cgns is None:
            cgns = "solver" in d
        if particles:
            model.setdefault("kind", PARTICLES)
        model_cls, train_cls = (ParticleModelConfig, ParticleTrainConfig) if particles else (ModelConfig, TrainConfig)
        return cls(data=data, model=dataclass_from(model_cls, model, "model"),
                   train=dataclass_from(train_cls, d.get("train") or {}, "train"),
                   solver=dataclass_from(SolverConfig, d.get("solver") or {}, "solver") if cgns else None,
                   policy=dataclass_from(PolicyConfig, d["policy"] or {}, "policy") if "policy" in d else None)

    def validate(self) -> None:
        check_finite(self)
        self.model.validate()
        if not self.model.std_epsilon > 0:
            raise ConfigError(f"model.std_epsilon must be positive, got {self.model.std_epsilon}")
        if self.solver is not None:
            if not self.particles and self.model.kind != "gn":
                raise ConfigError(f"model.kind={self.model.kind!r}: the C-GNS is a graph network (model.kind=gn)")
            self.solver.validate()
        if self.policy is not None:
            self.policy.validate()
        self.train.validate()


#: Options a resumed run may change: how long it trains, how often it logs, its threads and device.
RESUMABLE = {"train": ("steps", "minutes", "threads", "device", "log_every", "eval_every", "checkpoint_every")}


def config_mismatch(saved: RunConfig, now: RunConfig) -> str | None:
    """The first option (other than :data:`RESUMABLE`) on which ``now`` differs from the ``saved``
    configuration of a run, as ``"model.latent_size 64 in the checkpoint vs 32 now"``; None when
    they agree."""
    if (saved.solver is None) != (now.solver is None):
        return f"solver section {'present' if saved.solver else 'absent'} in the checkpoint vs not now"
    old, new = saved.to_dict(), now.to_dict()
    for section in ("model", "solver", "train", "policy"):
        for key, value in (old.get(section) or {}).items():
            if key not in RESUMABLE.get(section, ()) and (new.get(section) or {}).get(key) != value:
                return f"{section}.{key} {value} in the checkpoint vs {(new.get(section) or {}).get(key)} now"
    return None


def check_finite(config: RunConfig) -> None:
    """Refuse a non-finite number (``nan``, ``inf``) anywhere in ``config``: no option means one."""
    for section in ("model", "train", "solver", "policy"):
        values = getattr(config, section)
        for f in dataclasses.fields(values) if values is not None else ():
            value = getattr(values, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section}.{f.name} must be a finite number, got {value}")


def as_particle_config(config: RunConfig) -> RunConfig:
    """A particle run's configuration from ``config``: itself when its model is a particle
    simulator's, else its data, solver, and the model and train options both kinds share that
    differ from the articulated defaults (the others keep the particle defaults)."""
    if config.particles:
        return config
    out = RunConfig(data=list(config.data), model=ParticleModelConfig(), train=ParticleTrainConfig(),
                    solver=config.solver)
    for section, base in (("model", ModelConfig()), ("train", TrainConfig())):
        src, dst = getattr(config, section), getattr(out, section)
        names = {f.name for f in dataclasses.fields(dst)} - {"kind"}
        for f in dataclasses.fields(src):
            value = getattr(src, f.name)
            if f.name in names and value != getattr(base, f.name):
                setattr(dst, f.name, value)
    if config.model.kind != "gn":
        raise ConfigError(f"model.kind={config.model.kind!r} cannot simulate particles: use the graph network")
    out.validate()
    return out


def as_nbody_config(config: RunConfig) -> RunConfig:
    """An N-body run's configuration from an articulated default one (``gndesign train --data``
    an N-body dataset without model options): the N-body model defaults, and the train options set
    away from the articulated defaults."""
    if isinstance(config.model, NBodyModelConfig):
        return config
    if config.solver is not None or config.model.kind != "gn":
        raise ConfigError("N-body data trains the N-body message-passing model: drop the solver section and "
                          "model.kind (or set model.kind=nbody)")
    out = RunConfig(data=list(config.data), model=NBodyModelConfig(), train=NBodyTrainConfig())
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config.train, f.name)
        if value != getattr(TrainConfig(), f.name):
            setattr(out.train, f.name, value)
    out.validate()
    return out


def dataclass_from(cls, values: Mapping[str, Any], section: str):
    """An instance of dataclass ``cls`` from ``{option: value}`` (``section`` names it in errors)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            raise ConfigError(f"unknown option {section}.{k}; valid options: {', '.join(names)}")
    return cls(**{k: coerce(names[k], v, f"{section}.{k}") for k, v in values.items()})


def coerce(f: dataclasses.Field, value: Any, where: str):
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
        if isinstance(default, int) or f.type == "int | None":
            return int(value)
        if isinstance(default, float) or f.type == "float | None":
            return float(value)
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: cannot read {value!r} as {type(default).__name__}") from None


def parse_value(text: str):
    """A command-line value as YAML reads it (numbers, booleans, strings)."""
    return yaml.safe_load(text)


def read_config(path: str | os.PathLike | None, overrides: list[str] | None) -> dict:
    """The raw ``{section: {key: value}}`` of a YAML file with ``section.key=value`` overrides applied."""
    raw: dict = {}
    if path is not None:
        raw = read_yaml_mapping(path, "config file", ConfigError)
        for section in ("model", "train", "solver", "policy"):
            if raw.get(section) is not None and not isinstance(raw[section], dict):
                raise ConfigError(f"config file {path}: section {section}: must be a mapping of options "
                                  f"(key: value lines indented under {section}:), got {type(raw[section]).__name__}")
        if isinstance(raw.get("data"), str):
            raw["data"] = [raw["data"]]
        if raw.get("data") is not None and not isinstance(raw["data"], list):
            raise ConfigError(f"config file {path}: data: must be a list of dataset directories")
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.lr=3e-4)")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if section not in ("model", "train", "solver", "policy"):
            raise ConfigError(f"override {item!r}: unknown section {section!r}; expected model, train, solver or "
                              "policy")
        raw.setdefault(section, {})[name] = parse_value(value)
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                data: list[str | os.PathLike] | None = None, cgns: bool | None = None) -> RunConfig:
    """A validated :class:`RunConfig` from defaults, an optional YAML file and ``section.key=value``
    overrides.

    ``data``: the training data directories (they replace the file's ``data:``); particle datasets
    make the model section a particle simulator's (its own options and defaults). ``cgns``: train a
    constraint-based simulator (a ``solver`` section; None: when the file or an override has one)."""
    raw = read_config(path, overrides)
    if data is not None:
        raw["data"] = [str(d) for d in data]
    cfg = RunConfig.from_dict(raw, cgns=cgns)
    cfg.validate()
    return cfg
