"""The workflows' figures draw the data they are given (axes, lines, limits), not just some PNG."""

import numpy as np
import pytest
from PIL import Image

from gndesign.plotting import save_figure
from workflows.figures import design_figure, history_figure


def test_design_figure_draws_each_design_with_its_traces_and_the_bin(tmp_path):
    rng = np.random.default_rng(0)
    traces = [np.cumsum(rng.normal(size=(5, 3, 2)) * 0.1, 0) + [0.0, 1.0] for _ in range(2)]
    obstacles = [np.array([[-0.5, 1.5], [-0.1, 1.2], [0.2, 1.0]]), np.array([[-0.5, 1.5], [0.0, 1.4], [0.4, 1.3]])]
    panels = [{"title": f"design {i}", "obstacle": obstacles[i], "traces": traces[i]} for i in range(2)]
    fig = design_figure(panels, (-3.0, 3.0), 0.0, (1.0, 1.6), "bin at x=1.3")
    assert [ax.get_title() for ax in fig.axes] == ["design 0", "design 1"]
    assert fig.texts[0].get_text() == "bin at x=1.3"
    for ax, obstacle, trace in zip(fig.axes, obstacles, traces, strict=True):
        assert ax.get_xlim() == pytest.approx((-3.02, 3.02)) and ax.get_ylim()[0] == pytest.approx(-0.02)
        lines = {ln.get_label(): ln for ln in ax.lines}
        assert np.allclose(lines["obstacle"].get_xydata(), obstacle)
        particle_traces = [ln for ln in ax.lines if ln.get_label().startswith("_") and len(ln.get_xdata()) == 5]
        assert len(particle_traces) == 3 and np.allclose(particle_traces[1].get_xydata(), trace[:, 1])
        assert np.allclose(ax.collections[-1].get_offsets(), trace[-1])  # the final positions
    target = fig.axes[0].patches[0]  # axvspan: a rectangle in data x
    assert (target.get_x(), target.get_x() + target.get_width()) == pytest.approx((1.0, 1.6))
    path = save_figure(fig, tmp_path / "design.png")
    with Image.open(path) as png:
        assert png.size[0] == 1000  # two 5-inch panels at 100 dpi


def test_history_figure_puts_the_objective_left_and_the_terms_right():
    history = {"objective": [3.0, 2.0, 1.5], "total": [2.9, 1.9, 1.4], "score": [0.1, 0.3, 0.5],
               "best": [3.0, 2.0, 1.5], "feasible": [1.0, 1.0, 1.0]}
    left, right = history_figure(history, "cem on mujoco").axes
    assert [ln.get_label() for ln in left.lines] == ["objective", "total", "best so far"]
    assert [ln.get_label() for ln in right.lines] == ["score"]  # "feasible" is not a loss term
    assert np.allclose(right.lines[0].get_ydata(), history["score"])
    assert (left.get_title(), right.get_title()) == ("objective", "terms")
