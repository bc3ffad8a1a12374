"""C-GNS checkpoints written before the simulators became a front end plus a predictor
(``tests/reference/old_cgns_*.pt``, state-dict keys ``net.*``/``core.*`` and ``step_param``) load and
roll out exactly as they did then (``tests/reference/old_cgns_predictions.pt``), with and without
test-time constraints."""

from pathlib import Path

import torch

from gndesign.checkpoints import load_model
from gndesign.specs import parse_constraint

DATA = Path(__file__).parent / "reference"
PARTICLE_PIN = "pin nodes=0,3 weight=100"
CART_LIMIT = "joint_limit joints=slider upper=0.05 weight=1000"


def particle_inputs():
    """A history ``[3, 3, 5, 2]`` of falling particles and an obstacle ``[3, 3, 2]``."""
    gen = torch.Generator().manual_seed(0)
    start = torch.rand(3, 5, 2, generator=gen) * torch.tensor([0.8, 0.3]) + torch.tensor([-0.4, 0.1])
    hist = torch.stack([start + torch.tensor([0.0, 0.004 * k]) for k in (2, 1, 0)], 1)
    obs = torch.tensor([[-0.45, 0.45], [-0.35, 0.45], [-0.25, 0.45]]).expand(3, 3, 2)
    return hist, obs


def articulated_inputs(model):
    gen = torch.Generator().manual_seed(0)
    q = 0.1 * torch.randn(2, 2, generator=gen)
    v = torch.randn(2, 2, generator=gen) + torch.tensor([2.0, 0.0])
    a = torch.rand(2, 6, 1, generator=gen) * 2 - 1
    return q, v, a


def test_old_particle_cgns_checkpoint_rolls_out_as_before():
    ref = torch.load(DATA / "old_cgns_predictions.pt")["particles"]
    model, _ = load_model(DATA / "old_cgns_particles.pt", "cgns-particles")
    hist, obs = particle_inputs()
    with torch.no_grad():
        assert torch.equal(model.rollout(hist, obs, 3), ref["free"])
        pinned = model.rollout(hist, obs, 3, constraints=parse_constraint(PARTICLE_PIN), iterations=4)
    assert torch.equal(pinned, ref["pinned"])


def test_old_articulated_cgns_checkpoint_rolls_out_as_before():
    ref = torch.load(DATA / "old_cgns_predictions.pt")["cartpole"]
    model, _ = load_model(DATA / "old_cgns_cartpole.pt", "cgns-articulated")
    q, v, a = articulated_inputs(model)
    with torch.no_grad():
        for got, want in zip(model.rollout(q, v, a), ref["free"], strict=True):
            assert torch.equal(got, want)
        limited = model.rollout(q, v, a, constraints=parse_constraint(CART_LIMIT), iterations=6)
    for got, want in zip(limited, ref["limited"], strict=True):
        assert torch.equal(got, want)
