"""``gndesign train``: a forward model (graph network or MLP) or a C-GNS, chosen from the options."""

from __future__ import annotations

from pathlib import Path

from gndesign.config import load_config, read_config
from gndesign.training import train


def is_cgns_run(family: str | None, overrides: list[str] | None, config: str | None) -> bool:
    """Whether a run trains a C-GNS: ``family`` ``cgns``, an override ``solver.KEY=VALUE``, or a
    config file with a ``solver:`` section."""
    if family == "cgns" or any(s.startswith("solver.") for s in overrides or []):
        return True
    return bool(config) and "solver" in read_config(config, None)  # a broken file: a one-line ConfigError

#: ``train.steps`` of a run given only a time budget (``--minutes``): more than any run makes.
NO_STEP_LIMIT = 10**9


def train_model(out: str, data: list[str] | None = None, config: str | None = None, family: str | None = None,
                overrides: list[str] | None = None, steps: int | None = None, minutes: float | None = None,
                resume: bool = False, progress: bool = True, device: str | None = None) -> dict | None:
    """Train into the run directory ``out`` (config, metrics.csv, checkpoints/) and return the
    training summary (None on ranks other than 0 of a distributed run).

    ``family``: ``gn``, ``mlp`` (the forward model's ``model.kind``) or ``cgns``; ``overrides``:
    ``SECTION.KEY=VALUE`` strings applied after ``config``; ``steps`` (optimizer steps) and
    ``minutes`` set ``train.steps`` and ``train.minutes`` (``minutes`` alone: a time budget, with
    ``train.steps`` at :data:`NO_STEP_LIMIT`); ``device`` sets ``train.device``. With ``resume`` and
    no ``config``, the run's own ``out/config.yaml`` is the starting point (the options given now
    apply on top; the checkpoint then refuses any that changed what it trained).
    """
    saved = Path(out) / "config.yaml"
    if resume and config is None and saved.is_file():
        config = str(saved)
    cgns = is_cgns_run(family, overrides, config)
    overrides = list(overrides or [])
    if family and family != "cgns":
        overrides.append(f"model.kind={family}")
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    if device is not None:
        overrides.append(f"train.device={device}")
    if minutes is not None:
        overrides.append(f"train.minutes={minutes}")
        if steps is None:  # a time budget: no step limit (the default train.steps would stop it first)
            overrides.append(f"train.steps={NO_STEP_LIMIT}")
    if cgns:  # the constraint-based solver: a graph network over the same data (particles or articulated)
        cfg = load_config(config, overrides, data=[str(Path(d)) for d in data] if data else None, cgns=True)
        return train(cfg, out, resume=resume, progress=progress)
    # the data's format selects the model section before the overrides apply (--set model.net=egnn)
    cfg = load_config(config, overrides, data=[str(Path(d)) for d in data] if data else None)
    return train(cfg, out, resume=resume, progress=progress)
