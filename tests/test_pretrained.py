"""The shipped checkpoints (``gndesign/pretrained``) load and predict exactly what they predicted
when they were trained: ``tests/reference/pretrained_predictions.pt`` holds rollouts recorded with the
code that wrote them (the first ones before the simulators became a front end plus a predictor;
``multi`` with per-system statistics), on the inputs below."""

from pathlib import Path

import torch

from gndesign.checkpoints import load_model
from gndesign.lean import reference_path

REFERENCE = Path(__file__).parent / "reference" / "pretrained_predictions.pt"
ARTICULATED = [("cartpole", "cartpole"), ("swimmer6", "swimmer6"), ("swimmer6-k4", "swimmer6"),
               ("swimmers", "swimmer3"), ("swimmers", "swimmer9"), ("multi", "pendulum"), ("multi", "swimmer6")]


def articulated_inputs(model, system: str):
    """Two states near ``qpos0`` (hinges and slides only in these systems) and 5 random actions."""
    tree = model.tree(system)
    gen = torch.Generator().manual_seed(0)
    q = torch.as_tensor(tree.qpos0, dtype=torch.float32) + 0.3 * torch.randn(2, tree.nq, generator=gen)
    v = torch.randn(2, tree.nv, generator=gen)
    lo, hi = (torch.as_tensor(tree.ctrlrange[:, i], dtype=torch.float32) for i in (0, 1))
    a = lo + (hi - lo) * torch.rand(2, 5, tree.nu, generator=gen)
    return q, v, a


def particle_inputs(model):
    """Two scenes of 30 particles at rest on a grid above a two-segment obstacle."""
    gen = torch.Generator().manual_seed(0)
    xs = torch.linspace(-1.0, 1.0, 6)
    zs = torch.linspace(2.0, 2.6, 5)
    grid = torch.stack(torch.meshgrid(xs, zs, indexing="ij"), -1).reshape(-1, 2)
    pos = grid[None] + 0.01 * torch.randn(2, grid.shape[0], 2, generator=gen)
    obs = torch.tensor([[-1.0, 1.2], [0.0, 1.0], [1.0, 1.3]]) + 0.05 * torch.randn(2, 3, 2, generator=gen)
    return pos, obs


def test_shipped_articulated_models_predict_as_recorded():
    ref = torch.load(REFERENCE)
    for name, system in ARTICULATED:
        model, _ = load_model(f"pretrained:{name}", "forward")
        with torch.no_grad(), reference_path(model):  # the reference path (test_lean: lean to 1e-5)
            qs, vs = model.rollout(*articulated_inputs(model, system), system)
        expected = ref[f"{name}/{system}"]
        # Bit for bit on the CPU that recorded them (an AMD EPYC); float32 on other CPUs rounds
        # differently over these 5 steps: up to 4.1e-6 on an Intel Xeon, 1.2e-5 on another AMD EPYC
        # (multi/swimmer6 qvel, values up to 3.9: 3e-6 relative); any change of model or features
        # moves them by far more.
        torch.testing.assert_close(qs, expected["qpos"], rtol=1e-5, atol=1e-5, msg=f"{name}/{system} qpos")
        torch.testing.assert_close(vs, expected["qvel"], rtol=1e-5, atol=1e-5, msg=f"{name}/{system} qvel")


def test_shipped_particle_model_predicts_as_recorded():
    model, _ = load_model("pretrained:obstacle", "particles")
    with torch.no_grad(), reference_path(model):  # bit for bit (test_lean_particles: the lean path to 1e-5)
        positions = model.rollout(*particle_inputs(model), 4)
    assert torch.equal(positions, torch.load(REFERENCE)["obstacle"]["positions"])
