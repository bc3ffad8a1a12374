"""Configuration: YAML + overrides, one run config whose sections decide the model family, and the
configurations saved in existing checkpoints and YAML files."""

import pytest
import yaml

from gndesign.checkpoints import PRETRAINED_DIR, read_checkpoint
from gndesign.config import (
    ModelConfig,
    ParticleModelConfig,
    ParticleTrainConfig,
    RunConfig,
    SolverConfig,
    TrainConfig,
    load_config,
)
from gndesign.errors import ConfigError


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  latent_size: 64\ntrain:\n  lr: 0.01\n  minutes: 2\n")
    cfg = load_config(path, ["train.lr=3e-4", "model.shared_weights=true"])
    assert cfg.model.latent_size == 64 and cfg.train.lr == 3e-4 and cfg.model.shared_weights is True
    assert cfg.train.minutes == 2.0
    with pytest.raises(ConfigError, match="unknown option train.learning_rate"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["lr=1"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(None, ["train.steps=many"])


def test_the_sections_decide_the_family_and_survive_a_round_trip(tmp_path):
    forward = load_config(None, ["model.kind=mlp"])
    assert forward.family == "forward" and forward.solver is None and "solver" not in forward.to_dict()
    particles = load_config(None, ["model.kind=particles", "model.history=3"])
    assert particles.family == "particles" and isinstance(particles.model, ParticleModelConfig)
    assert isinstance(particles.train, ParticleTrainConfig) and particles.train.lr_final == 1e-5
    assert load_config(None, ["solver.iterations=3"]).family == "cgns-articulated"
    assert load_config(None, [], cgns=True).solver == SolverConfig()
    cgns = load_config(None, ["model.kind=particles", "solver.iterations=3"])
    assert cgns.family == "cgns-particles" and cgns.solver.iterations == 3
    for cfg in (forward, particles, cgns):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # what a run directory holds
        again = load_config(path)
        assert again == cfg and again.family == cfg.family
        assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="the C-GNS is a graph network"):
        load_config(None, ["model.kind=mlp"], cgns=True)
    with pytest.raises(ConfigError, match=r"unknown config section\(s\) \['planner'\]"):
        RunConfig.from_dict({"planner": {}})


# Options added after some shipped checkpoints were written, with the defaults that reproduce them.
ADDED_OPTIONS = {"limit_features": False, "datasets_per_batch": None, "net": "gn", "per_system_depth": False,
                 "edge_target_stats": False, "periodic_hinges": False,
                 "system_batch_size": None, "ema_decay": None, "device": "cpu", "balance_systems": False}


def test_configs_of_shipped_checkpoints_and_older_files_load():
    for name, family in {"cartpole": "forward", "swimmers": "forward", "obstacle": "particles"}.items():
        saved = read_checkpoint(PRETRAINED_DIR / f"{name}.pt")["config"]
        cfg = RunConfig.from_dict(saved)
        assert cfg.family == family
        out = cfg.to_dict()
        for section, values in saved.items():
            if not isinstance(values, dict):
                assert out[section] == values
                continue
            assert {k: out[section][k] for k in values} == values, section
            # options added since the checkpoint was written default to what it was trained with
            added = {k: out[section][k] for k in set(out[section]) - set(values)}
            assert added.items() <= ADDED_OPTIONS.items(), (section, added)
    # A C-GNS run's config.yaml as written before one run config existed (data, model, solver, train).
    old = {"data": [], "model": {"kind": "gn", "latent_size": 8}, "solver": {"iterations": 2, "step_size": 0.1},
           "train": {"steps": 4, "lr": 0.001}}
    cfg = RunConfig.from_dict(old)
    assert cfg.family == "cgns-articulated" and cfg.model == ModelConfig(latent_size=8)
    assert cfg.solver == SolverConfig(iterations=2) and cfg.train == TrainConfig(steps=4)
