"""Training on the lean path (gndesign.forward_training.lean_unrolled_loss): the one-step and
multi-step losses and their gradients with respect to every weight equal the reference path's
(float64, 1e-5), for one system or several, with or without noise-corrected positions; the
trainer takes the lean path by default and the reference path under GNDESIGN_LEAN=0."""

import pytest
import torch
from conftest import ALL_JOINTS_XML
from test_lean import CONFIGS, random_model

from envs.systems import get_system
from gndesign.config import ModelConfig, load_config
from gndesign.forward_training import unrolled_loss
from gndesign.lean import LeanRollout, reference_path
from gndesign.simulator import SystemSpec, Transitions, build_model
from gndesign.training import train

SHARED = ModelConfig(latent_size=8, mlp_hidden_size=8, mlp_layers=1, message_passing_steps=3, shared_weights=True)


def sequences(model, name, length: int, B: int = 5, seed: int = 2) -> tuple[dict, tuple]:
    """``length``-step sequences of ``name`` (random parameters; the "data" is the model's own
    rollout with perturbed actions) and a noised start state."""
    tree = model.tree(name)
    gen = torch.Generator().manual_seed(seed)
    q = torch.as_tensor(tree.qpos0) + 0.3 * torch.randn(B, tree.nq, generator=gen, dtype=torch.float64)
    v = torch.randn(B, tree.nv, generator=gen, dtype=torch.float64)
    a = torch.rand(B, length, tree.nu, generator=gen, dtype=torch.float64) * 2 - 1
    params = {k: p * (1 + 0.1 * torch.rand(p.shape, generator=gen, dtype=torch.float64))
              for k, p in model.builder(name).nominal_params(B, torch.float64).items()}
    with torch.no_grad(), reference_path(model):
        qs, vs = model.rollout(q, v, a * 0.9, name, params)
    seq = {"system": name, "qpos": qs, "qvel": vs, "action": a, "params": params}
    return seq, (qs[:, 0] + 0.01 * torch.randn(qs[:, 0].shape, generator=gen, dtype=torch.float64),
                 vs[:, 0] + 0.01 * torch.randn(vs[:, 0].shape, generator=gen, dtype=torch.float64))


def loss_and_grads(model, seqs, start, lean: bool, correct_pos_noise: bool = False):
    model.zero_grad(set_to_none=True)
    if lean:
        loss = unrolled_loss(model, seqs, start, correct_pos_noise=correct_pos_noise)
    else:
        with reference_path(model):
            loss = unrolled_loss(model, seqs, start, correct_pos_noise=correct_pos_noise)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def assert_same(model, seqs, start, correct_pos_noise: bool = False):
    lean_loss, lean = loss_and_grads(model, seqs, start, True, correct_pos_noise)
    ref_loss, ref = loss_and_grads(model, seqs, start, False, correct_pos_noise)
    assert torch.allclose(lean_loss, ref_loss, rtol=1e-5, atol=1e-10), (lean_loss, ref_loss)
    assert lean.keys() == ref.keys()
    for n in ref:
        # the last processor step's node and global updates reach no output on either path
        assert (lean[n] is None) == (ref[n] is None), n
        if ref[n] is not None:
            assert torch.allclose(lean[n], ref[n], rtol=1e-5, atol=1e-8), (n, (lean[n] - ref[n]).abs().max())
    assert sum(float(g.abs().sum()) for g in ref.values() if g is not None) > 0


@pytest.mark.parametrize("length", [1, 3])
@pytest.mark.parametrize("config", CONFIGS + [SHARED], ids=["sum", "mean", "shared"])
@pytest.mark.parametrize("source", ["cartpole", ALL_JOINTS_XML], ids=["cartpole", "alljoints"])
def test_lean_training_loss_and_gradients_equal_reference(source, config, length):
    model, name, _ = random_model(source, config)
    seq, start = sequences(model, name, length)
    assert_same(model, [seq], [start])


def test_noise_corrected_positions_and_several_systems():
    systems = [get_system(n) for n in ("cartpole", "acrobot")]
    model = build_model(CONFIGS[0], [SystemSpec(s.name, s.mjcf, s.control_timestep, s.assets) for s in systems])
    model = model.double()
    gen = torch.Generator().manual_seed(0)
    for s in systems:  # statistics from random transitions
        t = model.tree(s.name)
        q, q2 = (torch.as_tensor(t.qpos0) + 0.4 * torch.randn(64, t.nq, generator=gen, dtype=torch.float64)
                 for _ in range(2))
        v, v2 = (torch.randn(64, t.nv, generator=gen, dtype=torch.float64) for _ in range(2))
        a = torch.rand(64, t.nu, generator=gen, dtype=torch.float64)
        model.accumulate_statistics(Transitions(s.name, q, v, a, None, q2, v2,
                                                static=model.builder(s.name).static_graph(None, 64, q)))
    seqs, starts = zip(*(sequences(model, s.name, 2, B=3 + i, seed=i) for i, s in enumerate(systems)), strict=True)
    seqs, starts = list(seqs), list(starts)
    for correct in (False, True):
        assert_same(model, seqs, starts, correct)


def test_shared_weights_lean_rollout_applies_every_message_passing_step():
    model, name, (q, v, a) = random_model("acrobot", SHARED)
    with torch.no_grad():
        lean = model.rollout(q, v, a[:, None].expand(-1, 3, -1), name)
        with reference_path(model):
            ref = model.rollout(q, v, a[:, None].expand(-1, 3, -1), name)
    for x, y in zip(lean, ref, strict=True):
        assert torch.allclose(x, y, atol=1e-10)


def test_the_trainer_takes_the_lean_path_unless_switched_off(cartpole_data, tmp_path, monkeypatch):
    calls = []
    predict = LeanRollout.predict
    monkeypatch.setattr(LeanRollout, "predict", lambda self, *a: calls.append(1) or predict(self, *a))

    def run(out, lean: str):
        monkeypatch.setenv("GNDESIGN_LEAN", lean)
        cfg = load_config(None, ["train.steps=4", "train.batch_size=16", "train.stats_transitions=64",
                                 "train.unroll_steps=2", "model.latent_size=8", "model.mlp_hidden_size=8",
                                 "train.val_fraction=0.25"])
        cfg.data = [str(cartpole_data)]
        return train(cfg, tmp_path / out, progress=False)

    ref = run("ref", "0")
    assert not calls
    lean = run("lean", "1")
    assert len(calls) >= 4 * 2  # every step of every unroll
    # the same run on either path (same batches, same noise): float32 rounding apart
    assert lean["step"] == ref["step"] == 4
    assert lean["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-3)
    assert lean["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-3)
