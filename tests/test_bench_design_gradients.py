"""The design-gradient check (``scripts/bench_design_gradients.py``): on a short, smooth rollout the
analytic gradient's norm equals the finite-difference slope along it, and the descent test reports
the loss change per step for the gradient and for random directions."""

import runpy
from pathlib import Path

import pytest
import torch

from tests.test_design_spaces import small_problem

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_design_gradients.py"


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(SCRIPT), run_name="bench_design_gradients")


def test_the_gradient_norm_equals_the_finite_difference_slope_where_the_loss_is_smooth(bench):
    cfg, problem = small_problem("chain", 2)
    problem.model = problem.node_model = problem.node_model.double()
    problem.dtype, problem.init_t = torch.float64, problem.init_t.double()
    designs = torch.as_tensor(cfg.default_design())[None] + torch.tensor([[0.0], [0.03]], dtype=torch.float64)
    r = bench["sensitivity"](problem, designs, [1e-4, 1e-3])
    norm = torch.tensor(r["grad_norm"])
    assert norm.min() > 1e-6  # the balls touch the obstacle: the design moves them
    for h in (1e-4, 1e-3):
        torch.testing.assert_close(torch.tensor(r["slope"][h]), norm, rtol=1e-3, atol=0)
    # A step along the negative gradient lowers a smooth loss; the report holds every direction's change.
    d = bench["descent"](problem, designs, [1e-4], 3, torch.Generator().manual_seed(0))
    step = d["steps"][1e-4]
    assert len(d["loss"]) == 2 and len(step["random"]) == 2 and len(step["random"][0]) == 3
    assert all(v < 0 for v in step["along_gradient"])
