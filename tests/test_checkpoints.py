"""Checkpoints: one writer and one loader for every model family, pretrained names, the content
hash, compatibility checks, old layouts, and the shipped models' predictions."""

import numpy as np
import pytest
import torch
from conftest import PARTICLE_SCENE

from gndesign import checkpoints
from gndesign.cgns import ArticulatedCGNS, ParticleCGNS
from gndesign.checkpoints import (
    CHECKPOINT_FORMAT,
    FAMILIES,
    HASH_HEADER,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from gndesign.config import (
    ModelConfig,
    NBodyModelConfig,
    NBodyTrainConfig,
    ParticleModelConfig,
    ParticleTrainConfig,
    PolicyConfig,
    RunConfig,
    SolverConfig,
)
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import GndesignError
from gndesign.forward_training import TransitionSampler, system_spec
from gndesign.lean import reference_path
from gndesign.nbody_model import NBodyGN
from gndesign.particles import ParticleSimulator
from gndesign.policy_net import PolicyNet
from gndesign.simulator import Transitions, build_model

SCENE = PARTICLE_SCENE
NBODY_SYSTEM = {"name": "nbody-spring-2d", "law": "spring", "dim": 2, "num_particles": 4, "dt": 0.01, "damping": 0.5}
SMALL = {"latent_size": 8, "mlp_hidden_size": 8, "mlp_layers": 1, "message_passing_steps": 1}


def particle_window(seed: int = 0):
    """A history ``[4, 3, 5, 2]`` of particles drifting down, the next frame and a 2-segment obstacle."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.stack([torch.rand(4, 5, generator=g) * 0.8 - 0.4, torch.rand(4, 5, generator=g) * 0.3 + 0.1], -1)
    step = torch.randn(4, 1, 5, 2, generator=g) * 0.003
    frames = x0[:, None] + step * torch.arange(4.0)[None, :, None, None]
    obstacle = torch.tensor([[-0.45, 0.45], [-0.35, 0.45], [-0.25, 0.4]]).expand(4, -1, -1)
    return frames[:, :3], frames[:, 3], obstacle


@pytest.fixture(scope="module")
def models(cartpole_data):
    """``{family: (config, model)}``: a tiny model of every family with normalization statistics."""
    ds = TrajectoryDataset.load(cartpole_data)
    seq = TransitionSampler([ds], [np.arange(ds.num_episodes)]).sample(128, 1, torch.Generator().manual_seed(0))[0]
    batch = Transitions(seq["system"], seq["qpos"][:, 0], seq["qvel"][:, 0], seq["action"][:, 0], seq["params"],
                        seq["qpos"][:, 1], seq["qvel"][:, 1])
    articulated, particle = ModelConfig(**SMALL), ParticleModelConfig(**SMALL, history=2, obstacle_points=2)
    solver = SolverConfig(iterations=2)
    nbody = NBodyModelConfig(hidden_size=8, mlp_layers=1, message="kl", message_size=4)
    out = {
        "forward": (RunConfig([str(cartpole_data)], articulated), build_model(articulated, [system_spec(ds)])),
        "cgns-articulated": (RunConfig([str(cartpole_data)], articulated, solver=solver),
                             ArticulatedCGNS(articulated, [system_spec(ds)], solver)),
        "particles": (RunConfig(model=particle, train=ParticleTrainConfig()), ParticleSimulator(particle, SCENE)),
        "cgns-particles": (RunConfig(model=particle, train=ParticleTrainConfig(), solver=solver),
                           ParticleCGNS(particle, SCENE, solver)),
        "nbody": (RunConfig(model=nbody, train=NBodyTrainConfig()), NBodyGN(nbody, NBODY_SYSTEM)),
    }
    hist, nxt, _ = particle_window()
    for family, (cfg, model) in out.items():
        assert cfg.family == family
        if family == "nbody":
            model.acc_scale.fill_(2.5)
        elif cfg.particles:
            model.accumulate_statistics(hist, nxt)
        else:
            model.accumulate_statistics(batch)
        model.eval()
    policy = PolicyNet(8, 1, {"task": "cartpole/swingup", "system": "cartpole", "mjcf_sha256": None, "nq": 2, "nv": 2,
                              "nu": 1, "angles": [1], "ctrl_low": [-1.0], "ctrl_high": [1.0], "action_repeat": 1,
                              "dynamics": "test"})
    policy.set_statistics(seq["qpos"][:, 0], seq["qvel"][:, 0])
    out["policy"] = (RunConfig([str(cartpole_data)], policy=PolicyConfig(hidden_size=8, layers=1)), policy.eval())
    assert set(out) == set(FAMILIES)
    return out


def predict(model) -> torch.Tensor:
    """A short prediction of any family's model (states ``[B, H+1, ...]``)."""
    if isinstance(model, NBodyGN):
        g = torch.Generator().manual_seed(1)
        x, v, m = torch.randn(2, 4, 2, generator=g), torch.randn(2, 4, 2, generator=g), torch.rand(2, 4, generator=g)
        return model.step(x, v, m + 0.5, torch.ones(2, 4), 0.01, 2)[0]
    if isinstance(model, ParticleSimulator):
        hist, _, obstacle = particle_window(1)
        return model.rollout(hist, obstacle, 2)
    g = torch.Generator().manual_seed(1)
    q, v, u = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g), torch.rand(3, 2, 1, generator=g)
    if isinstance(model, PolicyNet):
        return torch.cat([model(q, v), model.value(q, v)[:, None]], 1)
    return model.rollout(q, v, u)[0]


def test_round_trip_of_every_family(models, tmp_path):
    for family, (cfg, model) in models.items():
        path = tmp_path / f"{family}.pt"
        save_checkpoint(path, model, cfg, step=3)
        loaded, blob = load_model(path, family)
        assert blob["family"] == family and blob["step"] == 3 and type(loaded) is type(model)
        assert blob["config"] == cfg.to_dict() and RunConfig.from_dict(blob["config"]).family == family
        a, b = model.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), family
        assert torch.equal(predict(model), predict(loaded)), family


def test_pretrained_names_resolve_through_the_one_loader_for_every_family(models, tmp_path, monkeypatch):
    shipped = {"cartpole": "forward", "swimmer6": "forward", "swimmers": "forward", "obstacle": "particles"}
    for name, family in shipped.items():
        assert load_model(f"pretrained:{name}")[1]["family"] == family
    monkeypatch.setattr(checkpoints, "PRETRAINED_DIR", tmp_path)
    for family, (cfg, model) in models.items():
        save_checkpoint(tmp_path / f"tiny-{family}.pt", model, cfg, step=1)
    for family, (_, model) in models.items():
        loaded, blob = load_model(f"pretrained:tiny-{family}", family)
        assert blob["family"] == family and torch.equal(predict(model), predict(loaded))
    with pytest.raises(GndesignError, match="no pretrained model 'nope'; available: tiny-cgns-articulated"):
        load_model("pretrained:nope")


def test_a_corrupted_checkpoint_is_refused(models, tmp_path):
    cfg, model = models["particles"]
    path = tmp_path / "ok.pt"
    save_checkpoint(path, model, cfg, step=1)
    raw = path.read_bytes()
    assert raw.startswith(HASH_HEADER)
    # A bit flipped in the payload: the content hash catches it.
    bad = bytearray(raw)
    bad[len(raw) // 2] ^= 0x10
    (tmp_path / "flipped.pt").write_bytes(bytes(bad))
    with pytest.raises(GndesignError, match=r"flipped.pt is corrupted \(its content does not match its sha256"):
        load_model(tmp_path / "flipped.pt")
    # A bit flipped anywhere (the header, the hash, the payload's container): refused, never loaded.
    rng = np.random.default_rng(0)
    for at in [*range(0, 100, 3), *rng.integers(100, len(raw), 40)]:
        bad = bytearray(raw)
        bad[at] ^= 1 << int(rng.integers(8))
        (tmp_path / "bad.pt").write_bytes(bytes(bad))
        with pytest.raises(GndesignError, match="corrupted|cannot read checkpoint"):
            load_model(tmp_path / "bad.pt")


def test_a_checkpoint_for_another_family_system_scene_or_layout_is_refused(models, tmp_path):
    paths = {}
    for family, (cfg, model) in models.items():
        paths[family] = tmp_path / f"{family}.pt"
        save_checkpoint(paths[family], model, cfg, step=1)
    with pytest.raises(GndesignError, match=r"holds a 'particles' model \(a particle simulator of the obstacle "
                                            r"scene\), not a forward model of articulated systems"):
        load_model(paths["particles"], "forward")
    with pytest.raises(GndesignError, match="holds a 'forward' model .*, not a C-GNS$"):
        load_model(paths["forward"], ("cgns-particles", "cgns-articulated"))
    for family in ("forward", "cgns-articulated"):
        with pytest.raises(GndesignError, match=r"trained on \['cartpole'\], not on 'swimmer6'"):
            load_model(paths[family], family, system="swimmer6")
        with pytest.raises(GndesignError, match="different 'cartpole' model"):
            load_model(paths[family], family, system="cartpole", mjcf_sha256="0" * 64)
    for family in ("particles", "cgns-particles"):
        with pytest.raises(GndesignError, match=r"another scene \(dt: 0.02 vs 0.01\)"):
            load_model(paths[family], family, scene={**SCENE, "dt": 0.01})
    blob = read_checkpoint(paths["forward"])
    blob["feature_names"]["node"][0] = "something_else"
    torch.save(blob, tmp_path / "layout.pt")
    with pytest.raises(GndesignError, match="incompatible node features"):
        load_model(tmp_path / "layout.pt")


def test_checkpoints_written_before_the_hash_and_the_family_field_still_load(models, tmp_path):
    legacy = {"forward": {}, "particles": {"kind": "particles"},
              "cgns-particles": {"kind": "cgns", "front": "particles"},
              "cgns-articulated": {"kind": "cgns", "front": "articulated"}}
    for family, (cfg, model) in models.items():
        if family not in legacy:  # a family born after the family field (the policy) has no old layout
            continue
        save_checkpoint(tmp_path / "new.pt", model, cfg, step=2)
        blob = read_checkpoint(tmp_path / "new.pt")
        del blob["family"]
        torch.save({**blob, **legacy[family]}, tmp_path / "old.pt")  # the old layout: a plain dict
        loaded, old = load_model(tmp_path / "old.pt", family)
        assert old["family"] == family and "kind" not in old and "front" not in old
        assert torch.equal(predict(model), predict(loaded))
    # A shipped model written in the old layout (a plain dict without the hash or the family) loads as
    # it is and predicts what the shipped file does (the shipped files themselves are new since issue 14).
    shipped = read_checkpoint(checkpoints.PRETRAINED_DIR / "cartpole.pt")
    old_layout = {k: v for k, v in shipped.items() if k != "family"}
    assert old_layout["format"] == CHECKPOINT_FORMAT
    torch.save(old_layout, tmp_path / "shipped-old.pt")
    loaded, old = load_model(tmp_path / "shipped-old.pt", "forward")
    assert old["family"] == "forward"
    with torch.no_grad():
        assert torch.equal(predict(loaded), predict(load_model("pretrained:cartpole", "forward")[0]))


RECORDED = {"cartpole": ("cartpole", [[-0.29510483, 0.38888999], [0.3051067, -0.41639059]],
                         [[0.19127277, -0.32839337], [0.20491356, -0.67991138]]),
            "obstacle": [[-0.49980831, 1.9853823], [-0.29980832, 2.0853827], [-0.099808283, 2.1853828],
                         [0.1001917, 2.2853827], [0.3001917, 2.3853829], [0.50019175, 2.4853828]],
            "swimmer6": ("swimmer6",
                         [[-0.28834835, -0.19226944, -0.021507457, -0.072618589, 0.13230455, 0.20518185, 0.26769716,
                           0.4435927],
                          [0.30812457, 0.21669421, 0.13242626, -0.076222792, -0.10568191, -0.22873414, -0.3353529,
                           -0.32847875]],
                         [[0.0661304, 0.087507181, 0.37073502, -0.53062665, 0.43840626, 0.048988543, -0.44363788,
                           0.94343662],
                          [0.020307939, 0.22116423, 0.07510218, -0.52109045, -0.11117941, -0.20364729, -0.53730386,
                           1.3251293]]),
            "swimmers": ("swimmer4",
                         [[-0.29032111, -0.15885001, 0.0055464404, 0.071233906, 0.2526145, 0.41009435],
                          [0.3093622, 0.16925859, 0.041681148, -0.19602248, -0.27808884, -0.40622029]],
                         [[0.05006725, -0.001996859, 0.22239566, -0.19100118, -0.25739014, 0.76768541],
                          [0.042471938, 0.11728757, 0.10475874, -0.45148918, -0.44486243, 0.61237061]])}


@pytest.mark.parametrize("name", ["cartpole", "swimmer6", "swimmers"])
def test_shipped_forward_models_predict_what_they_predicted_before(name):
    # A 3-step rollout's last state, recorded with the code before the lifecycle refactor (issue 11);
    # swimmer6, swimmers and cartpole when they were retrained (issue 14).
    system, qpos, qvel = RECORDED[name]
    model, _ = load_model(f"pretrained:{name}", "forward", system=system)
    t = model.tree(system)
    q = torch.linspace(-0.3, 0.4, t.nq)[None].repeat(2, 1)
    q[1] *= -1
    v = torch.linspace(0.2, -0.5, t.nv)[None].repeat(2, 1)
    u = torch.linspace(-0.5, 0.5, 3 * t.nu).reshape(1, 3, t.nu).repeat(2, 1, 1)
    with torch.no_grad(), reference_path(model):  # recorded bit for bit by the reference path (test_lean: lean)
        qs, vs = model.rollout(q, v, u, system)
    # float32 on another CPU rounds differently: recorded on an AMD EPYC, an Intel Xeon differs by up
    # to 2.7e-6 (swimmer6 velocities of ~1); a changed model or feature differs by far more.
    torch.testing.assert_close(qs[:, -1], torch.tensor(qpos), rtol=0, atol=1e-5)
    torch.testing.assert_close(vs[:, -1], torch.tensor(qvel), rtol=0, atol=1e-5)


def test_shipped_particle_model_predicts_what_it_predicted_before():
    model, _ = load_model("pretrained:obstacle", "particles")
    pos = torch.stack([torch.linspace(-0.5, 0.5, 6), torch.linspace(2.0, 2.5, 6)], -1)[None]
    verts = torch.tensor([[[-1.0, 1.0], [-0.6, 0.8], [-0.2, 0.6], [0.2, 0.6], [0.6, 0.5]]])
    with torch.no_grad():
        out = model.rollout(pos, verts, 5)
    torch.testing.assert_close(out[0, -1], torch.tensor(RECORDED["obstacle"]), rtol=0, atol=2e-6)
