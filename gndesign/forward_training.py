"""The forward-model family: articulated forward models (graph network or MLP) on trajectory data.

Training samples (sequences of) transitions uniformly from the datasets (:class:`TransitionSampler`),
perturbs each sequence's first state with input noise (:func:`add_noise`: positions in the tangent
space, velocities additively, per dof in units of the data's velocity spread) and unrolls the
model's own predictions for ``train.unroll_steps`` steps (:func:`unrolled_loss`). The family's
checkpoints record the systems trained on (MJCF, assets), the feature layout and the kinematic
signatures; :func:`check_articulated` refuses a checkpoint of another system or feature layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gndesign.config import TrainConfig, dataclass_from
from gndesign.datasets.params import PARAM_KEYS
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import ConfigError, GndesignError
from gndesign.families import Family, Trainer, to_device
from gndesign.graphs import GraphBuilder
from gndesign.io import sha256_bytes
from gndesign.kinematics import integrate_qpos
from gndesign.simulator import ForwardModel, SystemSpec, Transitions, build_model


class ForwardTrainer(Trainer):
    """Articulated forward models (:class:`ForwardModel`) on trajectory datasets."""

    def prepare(self) -> None:
        cfg, tc = self.config, self.config.train
        self.datasets = [TrajectoryDataset.load(p) for p in cfg.data]
        self.systems: dict[str, SystemSpec] = {}
        for ds in self.datasets:
            spec = system_spec(ds)
            if ds.system in self.systems and self.systems[ds.system].mjcf != spec.mjcf:
                raise GndesignError(f"two datasets are named {ds.system!r} but hold different models")
            if ds.system in self.systems and self.systems[ds.system].action_repeat != spec.action_repeat:
                raise GndesignError(f"the datasets of {ds.system!r} were generated with different --action-repeat "
                                    f"({self.systems[ds.system].action_repeat} and {spec.action_repeat}): "
                                    "a model steps one fixed number of control steps; train on one of them")
            self.systems[ds.system] = spec
        unknown = sorted(set(tc.system_batch_size or {}) - set(self.systems))
        if unknown:
            raise ConfigError(f"train.system_batch_size names {', '.join(unknown)}, which the data do not hold "
                              f"(systems: {', '.join(sorted(self.systems))})")
        splits = [ds.split(tc.val_fraction, tc.seed) for ds in self.datasets]
        self.train_set = TransitionSampler(self.datasets, [s[0] for s in splits])
        self.val_set = TransitionSampler(self.datasets, [s[1] for s in splits]) if tc.val_fraction > 0 else None
        self.scales = {ds.system: noise_scales(ds, tc) for ds in self.datasets}

    def build_model(self) -> ForwardModel:
        return build_model(self.config.model, list(self.systems.values()))

    def requested(self) -> dict:
        return {"systems": {name: sha256_bytes(spec.mjcf.encode()) for name, spec in self.systems.items()}}

    def init_statistics(self, rank: int) -> None:
        # Normalization statistics from a fixed sample of noised training transitions (the inputs
        # and noise-corrected targets the model is trained on), the same on every rank.
        tc, model = self.config.train, self.model
        stat_gen = torch.Generator().manual_seed(tc.seed + 12345)
        for seq in self.train_set.sample(tc.stats_transitions, 1, stat_gen):
            seq, (q, v) = self.to_device((seq, add_noise(model, seq, self.scales[seq["system"]], stat_gen)))
            model.accumulate_statistics(Transitions(seq["system"], q, v, seq["action"][:, 0], seq["params"],
                                                    seq["qpos"][:, 1], seq["qvel"][:, 1],
                                                    None if tc.correct_pos_noise else seq["qpos"][:, 0]))

    def loss(self, model, net, gens) -> torch.Tensor:
        tc = self.config.train
        seqs = self.train_set.sample(tc.batch_size, tc.unroll_steps, gens["sample"], tc.datasets_per_batch,
                                     tc.system_batch_size)
        start = [add_noise(model, s, self.scales[s["system"]], gens["noise"]) for s in seqs]
        loss = unrolled_loss(model, *self.to_device((seqs, start)), net, tc.correct_pos_noise)
        return loss.log() if tc.balance_systems else loss

    def validation_loss(self, model) -> float | None:
        return None if self.val_set is None else validation_loss(model, self.val_set, self.device)


def describe_articulated(model) -> dict:
    """What a checkpoint of an articulated model records: the systems (MJCF, timestep, assets), the
    feature layout and each system's kinematic signature."""
    return {"systems": model.describe()["systems"], "feature_names": GraphBuilder.feature_names(),
            "signatures": {s: model.tree(s).signature() for s in model.trained_systems}}


def check_articulated(blob: dict, where, system: str | None = None, allow_new_system: bool = False,
                      mjcf_sha256: str | None = None, scene=None, systems: dict[str, str] | None = None) -> None:
    """Refuse a checkpoint of another feature layout, or not trained on ``system`` (unless
    ``allow_new_system``: graph networks only), or on another MJCF of it (``mjcf_sha256``), or
    (``systems``: ``{name: MJCF sha256}`` of the data a run resumes on) trained on other systems."""
    names = GraphBuilder.feature_names()
    for part, cols in blob["feature_names"].items():
        if cols != names[part]:
            diff = next((f"{a!r} vs {b!r}" for a, b in zip(cols, names[part], strict=False) if a != b),
                        f"{len(cols)} vs {len(names[part])} columns")
            raise GndesignError(f"checkpoint {where} has incompatible {part} features ({diff}): it was "
                                "written by another gndesign version; retrain it")
    specs = blob["systems"]
    trained = [s["name"] for s in specs]
    gn = blob["config"]["model"].get("kind", "gn") == "gn"
    if system is not None and system not in trained and not (allow_new_system and gn):
        raise GndesignError(f"checkpoint {where} was trained on {trained}, not on {system!r}"
                            + ("" if gn else " (an MLP cannot serve another system)"))
    if system is not None and mjcf_sha256 is not None and system in trained:
        if sha256_bytes(specs[trained.index(system)]["mjcf"].encode()) != mjcf_sha256:
            raise GndesignError(f"checkpoint {where} was trained on a different {system!r} model "
                                "(its MJCF differs from this data's)")
    if systems is not None:
        if sorted(systems) != sorted(trained):
            raise GndesignError(f"the checkpoint {where} trained on {', '.join(trained)}, --data holds "
                                f"{', '.join(systems)}: resume with the run's data or start a new run (another --out)")
        for spec in specs:
            if sha256_bytes(spec["mjcf"].encode()) != systems[spec["name"]]:
                raise GndesignError(f"the checkpoint {where} trained on another {spec['name']!r} model (its MJCF "
                                    "differs from --data's): resume with the run's data or start a new run")


def system_specs(blob: dict) -> list[SystemSpec]:
    """The systems a checkpoint of an articulated model was trained on."""
    return [SystemSpec.from_dict(d) for d in blob["systems"]]


FORWARD = Family("forward", "a forward model", "articulated systems",
                 build=lambda cfg, blob: build_model(cfg.model, system_specs(blob)),
                 describe=describe_articulated, check=check_articulated, trainer=ForwardTrainer)


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

    def sample(self, batch_size: int, length: int, generator: torch.Generator,
               datasets: int | None = None, system_batch_size: dict[str, int] | None = None) -> list[dict]:
        """``batch_size`` sequences of ``length`` transitions, grouped by dataset. ``datasets``: draw
        the batch from only that many datasets (chosen in proportion to their start points), so a
        step costs that many per-system passes instead of one per dataset; with one,
        ``system_batch_size`` may give the chosen system's own batch size."""
        T_lens = [t["action"].shape[1] for t in self.tensors]
        starts = torch.tensor([n // T * (T - length + 1) for n, T in zip(self.sizes, T_lens, strict=True)])
        if (starts <= 0).any():
            raise ConfigError(f"episodes are shorter than the unroll length {length}")
        weights = starts.double()
        if datasets is not None and datasets < len(starts):
            chosen = torch.multinomial(weights, datasets, replacement=False, generator=generator)
            weights = torch.zeros_like(weights).index_fill_(0, chosen, 1.0) * weights
        if system_batch_size and datasets == 1:
            d = int(weights.argmax())  # the one dataset drawn from
            batch_size = system_batch_size.get(self.datasets[d].system, batch_size)
        pick = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
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

    ``net`` is the module to call (a DDP wrapper of ``model`` in distributed runs). A graph
    network on one process computes it on the lean path (:func:`lean_unrolled_loss`)."""
    net = net or model
    if net is model:
        rollouts = [model.lean_step(s["system"], model.builder(s["system"]).static_graph(s["params"], q.shape[0], q), q)
                    for s, (q, _) in zip(seqs, start, strict=True)]
        if all(r is not None for r in rollouts):
            return lean_unrolled_loss(model, seqs, start, rollouts, correct_pos_noise)
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


def lean_unrolled_loss(model: ForwardModel, seqs: list[dict], start: list[tuple[torch.Tensor, torch.Tensor]],
                       rollouts: list, correct_pos_noise: bool = False) -> torch.Tensor:
    """:func:`unrolled_loss` on the lean path: each sequence's topology and parameters are fixed,
    so its lean step (``rollouts``: :class:`gndesign.lean.LeanRollout`, one per sequence batch)
    is prepared once per batch and serves every step of the unroll."""
    length = seqs[0]["action"].shape[1]
    states, total = list(start), 0.0
    for k in range(length):
        sq_sum, count, nxt = 0.0, 0, []
        for s, r, (q, v) in zip(seqs, rollouts, states, strict=True):
            a = s["action"][:, k]
            pred = r.predict(q, v, a)
            target, mask = model.targets(Transitions(s["system"], q, v, a, s["params"], s["qpos"][:, k + 1],
                                                     s["qvel"][:, k + 1],
                                                     None if correct_pos_noise or k else s["qpos"][:, 0]))
            sq_sum = sq_sum + ((pred - target).pow(2) * mask).sum()
            count += int(mask.sum()) * pred.shape[0]
            if k + 1 < length:
                nxt.append(r.integrate(q, v, pred))
        total = total + sq_sum / max(count, 1)
        states = nxt
    return total / length


@torch.no_grad()
def validation_loss(model: ForwardModel, sampler: TransitionSampler, device: torch.device | None = None,
                    max_transitions: int = 4096) -> float:
    """One-step normalized loss (no input noise) on a fixed subset of held-out transitions (on ``device``)."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    seqs = to_device(sampler.sample(max_transitions, 1, gen), device or torch.device("cpu"))
    batches = [Transitions(s["system"], s["qpos"][:, 0], s["qvel"][:, 0], s["action"][:, 0], s["params"],
                           s["qpos"][:, 1], s["qvel"][:, 1]) for s in seqs]
    return float(model.loss(batches))



def held_out_episodes(blob: dict, ds: TrajectoryDataset, which: str = "auto") -> tuple[np.ndarray, str]:
    """The episodes to evaluate on: the run's validation split when the checkpoint trained on this
    dataset (same system and MJCF), else every episode."""
    tc = dataclass_from(TrainConfig, blob["config"]["train"], "train")
    trained_here = any(Path(p).resolve() == ds.path.resolve() for p in blob["config"]["data"])
    if which == "all" or (which == "auto" and not trained_here):
        return np.arange(ds.num_episodes), "all"
    val = ds.split(tc.val_fraction, tc.seed)[1]
    if len(val) == 0:
        raise GndesignError("the run kept no validation episodes (train.val_fraction=0): use --episodes all")
    return val, "validation"


def system_spec(ds: TrajectoryDataset) -> SystemSpec:
    return SystemSpec(name=ds.system, mjcf=ds.mjcf, control_timestep=ds.control_timestep, assets=ds.assets,
                      action_repeat=ds.action_repeat)

