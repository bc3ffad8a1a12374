"""One-step and rollout errors of a model on a dataset (``gndesign evaluate``): trajectory data
(articulated systems) or particle data (the obstacle scene), told apart by the dataset's format."""

from __future__ import annotations

from gndesign.checkpoints import load_model, resolve_checkpoint
from gndesign.coarse import check_same_repeat, model_action_repeat
from gndesign.datasets.formats import dataset_format
from gndesign.datasets.particles import ParticleDataset
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import ConfigError
from gndesign.evaluation import evaluate, plot_rollout
from gndesign.forward_training import held_out_episodes, system_spec
from gndesign.io import atomic_write_json, check_outputs
from gndesign.particle_evaluation import particle_rollout_errors, plot_particle_rollout, summarize_particle_errors


def parse_horizons(text: str) -> list[int]:
    """Comma-separated positive rollout horizons (``"1,10,50"``), or a one-line error."""
    try:
        hs = [int(h) for h in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"--horizons must be comma-separated positive integers (control steps or frames), e.g. "
                          f"1,10,50; got {text!r}") from None
    bad = [h for h in hs if h < 1]
    if bad:
        raise ConfigError(f"--horizons must be positive (a rollout of at least one step), got {bad[0]} in {text!r}")
    return hs


def evaluate_model(model: str, data: str, horizons: str = "1,10,50,100", episode_set: str = "auto",
                   plot: str | None = None, out: str | None = None, overwrite: bool = False,
                   statistics: str = "nearest") -> dict:
    """Evaluate checkpoint ``model`` (a path or ``pretrained:NAME``) on the dataset ``data``.

    ``horizons``: comma-separated rollout horizons; ``episode_set``: ``auto`` (the held-out split if
    the model trained on this data, else all), ``validation`` or ``all`` (trajectory data only).
    With ``plot``, draws a predicted-vs-true rollout (PNG); with ``out``, writes the result (JSON).
    Particle results have ``position_error`` per frame; trajectory results ``qpos_rmse`` and
    ``body_pos_error`` per horizon. The horizons and the output paths are checked first
    (:func:`gndesign.io.check_output`: never over the model or the data; ``overwrite`` allows writing
    into another dataset or run directory). ``statistics``: how a graph network normalizes a system it
    was not trained on (``nearest``, ``pooled`` or a trained system's name; see
    :meth:`gndesign.normalization.PerSystemStatistics.adopt_statistics`).
    """
    parse_horizons(horizons)
    inputs = [resolve_checkpoint(model), data]
    check_outputs({"--plot": plot, "--out": out}, inputs, overwrite)
    if dataset_format(data) == "particles":
        result = evaluate_particles(model, data, horizons, episode_set, plot)
    else:
        result = evaluate_trajectories(model, data, horizons, episode_set, plot, statistics)
    if out:
        atomic_write_json(out, result)
    return result


def evaluate_particles(model: str, data: str, horizons: str, episode_set: str = "auto",
                       plot: str | None = None) -> dict:
    """Open-loop position errors of a particle model from rest (every episode of ``data``)."""
    ckpt = resolve_checkpoint(model)
    ds = ParticleDataset.load(data)
    sim, _ = load_model(ckpt, "particles", scene=ds.scene)
    frames = [h for h in parse_horizons(horizons) if h <= ds.steps] + [ds.steps]
    result = summarize_particle_errors(particle_rollout_errors(sim, ds), frames)
    result.update({"checkpoint": str(ckpt), "data": str(data)})
    if plot:
        result["plot"] = str(plot_particle_rollout(sim, ds, 0, plot))
    return result


def evaluate_trajectories(model: str, data: str, horizons: str, episode_set: str = "auto",
                          plot: str | None = None, statistics: str = "nearest") -> dict:
    """One-step loss and rollout errors of a forward model on trajectory data."""
    ckpt = resolve_checkpoint(model)
    ds = TrajectoryDataset.load(data)
    net, blob = load_model(ckpt, "forward", system=ds.system, allow_new_system=True, mjcf_sha256=None)
    check_same_repeat(model_action_repeat(net, ds.system), ds.action_repeat, f"the dataset {data} has action repeat",
                      "evaluate on data generated with the model's --action-repeat")
    if ds.system not in net.systems:
        net.add_system(system_spec(ds), statistics)
    episodes, which = held_out_episodes(blob, ds, episode_set)
    hs = tuple(parse_horizons(horizons))
    result = evaluate(net, ds, episodes, hs)
    result.update({"checkpoint": str(ckpt), "data": str(data), "episode_set": which,
                   "action_repeat": ds.action_repeat, "control_timestep": ds.control_timestep,
                   "trained_on": net.trained_systems})
    if ds.system not in net.trained_systems and hasattr(net, "statistics_source"):
        result["statistics_from"] = net.statistics_source(ds.system) or "pooled"
    if plot:
        result["plot"] = str(plot_rollout(net, ds, int(episodes[0]), max(hs), plot))
    return result
