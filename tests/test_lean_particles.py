"""The lean particle path (gndesign.particle_lean) equals the reference path (GNDESIGN_LEAN=0):
rollouts (values, and gradients with respect to the obstacle, the initial state and the weights),
checkpointed rollouts, the training losses; and it leaves the C-GNS alone."""

from __future__ import annotations

import pytest
import torch
from conftest import PARTICLE_SCENE

from gndesign.config import ParticleModelConfig, SolverConfig
from gndesign.particle_lean import LeanParticles
from gndesign.particle_training import unrolled_particle_loss
from gndesign.particles import ParticleSimulator

SCENE = {**PARTICLE_SCENE, "num_particles": 6}
F64 = torch.float64


def model_of(seed: int = 0, **cfg) -> ParticleSimulator:
    torch.manual_seed(seed)
    cfg = {"latent_size": 16, "mlp_hidden_size": 16, "mlp_layers": 1, "message_passing_steps": 3, "history": 2,
           "radius": 4.0, "obstacle_points": 3, **cfg}
    model = ParticleSimulator(ParticleModelConfig(**cfg), SCENE).to(F64)
    hist = torch.randn(4, cfg["history"] + 1, 6, 2, dtype=F64) * 0.01
    model.accumulate_statistics(hist, hist[:, -1] + torch.randn(4, 6, 2, dtype=F64) * 0.01)
    return model


def scene_batch():
    """Two scenes: particles resting on and near the obstacle (some out of its reach), and the
    same particles above an obstacle far below them (no particle-obstacle edges at first)."""
    pos = torch.tensor([[-0.05, 0.32], [0.0, 0.33], [0.05, 0.325], [0.08, 0.36], [-0.3, 0.2], [0.3, 0.45]], dtype=F64)
    verts = torch.tensor([[[-0.1, 0.3], [0.0, 0.29], [0.1, 0.3]], [[-0.1, 0.05], [0.0, 0.04], [0.1, 0.1]]], dtype=F64)
    hist = torch.stack([pos - torch.tensor([0.0, -0.004], dtype=F64) * (2 - k) for k in range(3)])
    return hist[None].expand(2, -1, -1, -1).clone(), verts


def both_paths(monkeypatch, fn):
    out = {}
    for lean in ("0", "1"):
        monkeypatch.setenv("GNDESIGN_LEAN", lean)
        out[lean] = fn()
    return out["0"], out["1"]


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [{}, {"aggregation": "mean", "shared_weights": True, "mlp_layers": 2},
                                 {"message_passing_steps": 1, "history": 1}])
def test_lean_rollout_equals_the_reference_values_and_gradients(monkeypatch, cfg):
    model = model_of(**cfg)
    hist, verts = scene_batch()
    hist = hist[:, -(model.history + 1):]
    weights = torch.linspace(0.5, 1.5, 6 * 7 * 2 * 2, dtype=F64).view(2, 7, 6, 2)

    def run():
        h, v = hist.clone().requires_grad_(True), verts.clone().requires_grad_(True)
        out = model.rollout(h, v, 6)
        grads = torch.autograd.grad((out * weights).sum(), [h, v, *model.parameters()])
        return out, grads

    (ref, g_ref), (lean, g_lean) = both_paths(monkeypatch, run)
    assert ref.shape == (2, 7, 6, 2) and float((ref[:, -1] - ref[:, 0]).abs().max()) > 1e-3
    close(lean, ref)
    assert g_ref[1].abs().max() > 1e-3  # the obstacle matters (so the lean path could get it wrong)
    for a, b in zip(g_lean, g_ref, strict=True):
        close(a, b)


def test_lean_plan_drops_what_cannot_reach_a_particle():
    model = model_of()
    hist, verts = scene_batch()
    lean = LeanParticles(model, model.obstacle_nodes(verts), 6)
    plan = lean.plan(hist[:, -1])
    # Scene 0 touches its obstacle (7 nodes, every one within 3 hops); scene 1 does not.
    assert plan.nodes[0] == 12 + 7 and plan.nodes[-1] == 12
    assert plan.nodes == sorted(plan.nodes, reverse=True) and plan.edges == sorted(plan.edges, reverse=True)
    assert set(plan.obs_rows.tolist()) == set(range(7))
    far = lean.plan(hist[:, -1] + torch.tensor([0.0, 0.5], dtype=F64))
    assert far.nodes == [12] * 4 and len(far.oo_rows) == 0


def test_checkpointed_lean_rollout_gives_the_same_positions_and_gradients(monkeypatch):
    monkeypatch.setenv("GNDESIGN_LEAN", "1")
    model = model_of()
    hist, verts = scene_batch()
    nodes_of = model.obstacle_nodes
    runs = []
    for budget in (None, 0.0, 1e9):  # plain, every frame checkpointed, under the budget
        v = verts.clone().requires_grad_(True)
        lean = LeanParticles(model, nodes_of(v), 6)
        out = lean.rollout(hist, 5) if budget is None else lean.rollout(hist, 5, checkpoint=True, budget=budget)
        runs.append((out, torch.autograd.grad(out.pow(2).sum(), v)[0]))
    for out, g in runs[1:]:
        torch.testing.assert_close(out, runs[0][0], rtol=0, atol=0)
        torch.testing.assert_close(g, runs[0][1], rtol=1e-12, atol=1e-14)
    close(model.rollout(hist, verts, 5, checkpoint=True), runs[0][0])


def test_lean_training_losses_equal_the_reference(monkeypatch):
    model = model_of()
    hist, verts = scene_batch()
    steps = torch.arange(1, 4, dtype=F64)[None, :, None, None]
    future = hist[:, -1:] + torch.tensor([0.001, -0.003], dtype=F64) * steps

    def losses():
        unrolled = unrolled_particle_loss(model, hist, future, model.obstacle_nodes(verts, hist.shape[0]))
        grads = torch.autograd.grad(unrolled, list(model.parameters()))
        return unrolled, grads, model.loss(hist, verts, future[:, 0])

    (u0, g0, l0), (u1, g1, l1) = both_paths(monkeypatch, losses)
    close(u1, u0)
    close(l1, l0)
    for a, b in zip(g1, g0, strict=True):
        close(a, b)


def test_non_finite_particles_do_not_break_the_lean_path(monkeypatch):
    model = model_of()
    hist, verts = scene_batch()
    hist[0, :, 5] = float("nan")
    ref, lean = both_paths(monkeypatch, lambda: model.rollout(hist, verts, 2))
    torch.testing.assert_close(lean, ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert torch.isfinite(lean[1]).all() and torch.isfinite(lean[0, :, :5]).all()


def test_lean_path_reproduces_the_shipped_model_s_recorded_predictions(monkeypatch):
    from test_pretrained import REFERENCE, particle_inputs

    from gndesign.checkpoints import load_model
    from gndesign.lean import reference_path

    monkeypatch.setenv("GNDESIGN_LEAN", "1")
    model, _ = load_model("pretrained:obstacle", "particles")
    assert model.lean()
    with torch.no_grad():
        positions = model.rollout(*particle_inputs(model), 4)
    torch.testing.assert_close(positions, torch.load(REFERENCE)["obstacle"]["positions"], rtol=0, atol=1e-5)
    with reference_path(model):
        assert not model.lean()
    assert model.lean()


def test_cgns_keeps_the_reference_path(monkeypatch):
    monkeypatch.setenv("GNDESIGN_LEAN", "1")
    cgns = ParticleSimulator(ParticleModelConfig(latent_size=8, mlp_hidden_size=8, mlp_layers=1,
                                                 message_passing_steps=1, history=1, obstacle_points=2), SCENE,
                             SolverConfig())
    assert not cgns.lean() and model_of().lean()
    monkeypatch.setenv("GNDESIGN_LEAN", "0")
    assert not model_of().lean()
