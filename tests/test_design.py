"""Design optimizers (planners/design.py): toy optima, bounds, the squash, the NaN guard, the prior."""

import logging
import math

import pytest
import torch

from gndesign.errors import GndesignError
from planners.design import CEMDesign, GradientDesign, RandomDesign, Squash, make_design_optimizer

LOW = torch.tensor([-1.0, -1.0, -0.5, 0.0])
HIGH = torch.tensor([1.0, 2.0, 0.5, 1.0])
OPTIMUM = torch.tensor([0.3, -0.6, 0.5, 1.0])  # the last two sit on their upper bounds: the box's optimum


def quadratic(target):
    def loss(x):
        d = x - target.to(x)
        return {"total": d.square().sum(-1), "distance": d.norm(dim=-1)}
    return loss


def track_bounds(loss_fn, seen):
    def loss(x):
        seen.append(x.detach().clone())
        return loss_fn(x)
    return loss


TARGET = torch.tensor([0.3, -0.6, 0.9, 1.7])  # outside the box in the last two coordinates
OPTIMIZERS = {
    "gradient": lambda: GradientDesign(LOW, HIGH, iterations=150, lr=0.1, seed=0),
    "gradient-normalized": lambda: GradientDesign(LOW, HIGH, iterations=150, lr=0.2, lr_decay=0.02, backtrack=0.01,
                                                  grow=1.5, update="normalized", seed=0),
    "cem": lambda: CEMDesign(LOW, HIGH, population=32, elites=6, budget=32 * 25, seed=0),
    "random": lambda: RandomDesign(LOW, HIGH, budget=20000, batch=2000, seed=0),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_finds_the_box_optimum_and_never_leaves_the_bounds(name):
    seen = []
    opt = OPTIMIZERS[name]()
    result = opt.optimize(track_bounds(quadratic(TARGET), seen))
    xs = torch.cat(seen)
    assert bool(((xs >= LOW.double()) & (xs <= HIGH.double())).all())
    assert bool(((result.design >= LOW.double()) & (result.design <= HIGH.double())).all())
    tol = {"gradient": 0.02, "gradient-normalized": 0.02, "cem": 0.02, "random": 0.25}[name]
    assert (result.design - OPTIMUM.double()).abs().max() < tol, result.design
    # The objective is the best one seen, the history records every term once per iteration.
    assert result.objective == pytest.approx(min(result.history["objective"]))
    assert result.history["best"] == sorted(result.history["best"], reverse=True)
    assert set(result.history) >= {"total", "distance", "prior", "objective", "best"}
    assert result.evaluations == xs.shape[0] and result.optimizer == name.split("-")[0]
    assert result.terms["total"] == pytest.approx(result.objective)


def test_budgets_count_designs_scored():
    loss = quadratic(TARGET)
    assert GradientDesign(LOW, HIGH, iterations=7, restarts=3).optimize(loss).evaluations == 3 * 8
    assert CEMDesign(LOW, HIGH, population=16, budget=100).optimize(loss).evaluations == 16 * 6
    assert RandomDesign(LOW, HIGH, budget=70, batch=32).optimize(loss).evaluations == 70


def test_squash_maps_onto_the_box_with_the_right_gradient():
    sq = Squash(LOW.double(), HIGH.double())
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sq, (z,))
    x = sq(torch.tensor([[-50.0, 50.0, 0.0, 3.0]], dtype=torch.float64))
    assert bool(((x >= LOW) & (x <= HIGH)).all())
    assert torch.allclose(x[0, 2], torch.tensor(0.0, dtype=torch.float64))
    inner = LOW.double() + (HIGH.double() - LOW.double()) * torch.rand(6, 4, dtype=torch.float64)
    assert torch.allclose(sq(sq.inverse(inner)), inner, atol=1e-10)
    assert torch.isfinite(sq.inverse(torch.stack([LOW, HIGH]).double())).all()  # bounds themselves: finite z


def test_nan_guard_resets_and_recovers(caplog):
    calls = {"n": 0}
    target = quadratic(torch.tensor([0.3, -0.6, 0.2, 0.4]))

    def flaky(x):  # the simulator blows up on a few iterations (for one restart or all)
        calls["n"] += 1
        terms = target(x)
        if calls["n"] in (3, 4, 10):
            terms["total"] = terms["total"] * torch.tensor(float("nan"))
        elif calls["n"] == 6:
            terms["total"] = terms["total"] + 0 * torch.where(torch.arange(len(x)) == 0, math.inf, 0.0)
        return terms

    with caplog.at_level(logging.WARNING, logger="planners.design"):
        result = GradientDesign(LOW, HIGH, iterations=120, lr=0.1, restarts=2).optimize(flaky)
    assert "non-finite" in caplog.text
    assert torch.isfinite(result.design).all() and math.isfinite(result.objective)
    assert (result.design - torch.tensor([0.3, -0.6, 0.2, 0.4], dtype=torch.float64)).abs().max() < 0.02


@pytest.mark.parametrize("clip", [1.0, math.inf])
def test_gradient_clipping_survives_a_gradient_spike(clip):
    # One iteration's gradient is 1e8 times too large (a simulator glitch). Unclipped, it fills
    # Adam's second moment and freezes the design for hundreds of steps; clipped, nothing happens.
    calls = {"n": 0}
    target = torch.tensor([0.3, -0.6, 0.2, 0.4])

    def spiky(x):
        calls["n"] += 1
        total = quadratic(target)(x)["total"]
        return {"total": total * (1e8 if calls["n"] == 2 else 1.0)}

    result = GradientDesign(LOW, HIGH, iterations=100, lr=0.1, grad_clip=clip).optimize(spiky)
    error = (result.design - target.double()).abs().max()
    assert (error < 0.02) if clip == 1.0 else (error > 0.1)


def test_smoothness_prior_straightens_the_design():
    low, high = -torch.ones(6), torch.ones(6)
    zigzag = torch.tensor([0.8, -0.8, 0.8, -0.8, 0.8, -0.8])
    loss = lambda x: {"total": 0.1 * (x - zigzag.to(x)).square().sum(-1)}  # noqa: E731
    plain = GradientDesign(low, high, iterations=200, lr=0.1).optimize(loss).design
    smooth_opt = GradientDesign(low, high, iterations=200, lr=0.1, smoothness=1.0)
    smooth = smooth_opt.optimize(loss)
    assert plain.diff().abs().mean() > 1.4
    assert smooth.design.diff().abs().mean() < 0.5
    assert smooth.terms["prior"] == pytest.approx(float(smooth_opt.prior(smooth.design[None])[0]))
    assert smooth.terms["objective"] == pytest.approx(smooth.terms["total"] + smooth.terms["prior"])


def test_bad_input():
    with pytest.raises(GndesignError, match="unknown optimizer"):
        make_design_optimizer("adam", LOW, HIGH)
    with pytest.raises(ValueError, match="low < high"):
        GradientDesign(HIGH, LOW)
    with pytest.raises(ValueError, match="outside the bounds"):
        GradientDesign(LOW, HIGH).optimize(quadratic(TARGET), init=HIGH + 1)
    with pytest.raises(ValueError, match="less than one population"):
        CEMDesign(LOW, HIGH, population=32, budget=10)
    with pytest.raises(ValueError, match="'total'"):
        RandomDesign(LOW, HIGH, budget=4).optimize(lambda x: {"loss": x.sum(-1)})
    assert isinstance(make_design_optimizer("cem", LOW, HIGH, population=8, elites=2), CEMDesign)


@pytest.mark.parametrize("make", [lambda: CEMDesign(LOW, HIGH, population=8, iterations=10**6, max_seconds=0.05),
                                  lambda: RandomDesign(LOW, HIGH, budget=10**9, batch=8, max_seconds=0.05)])
def test_time_budget_stops_sampling(make):
    import time

    def slow(x):
        time.sleep(0.01)
        return quadratic(TARGET)(x)

    result = make().optimize(slow)
    assert 8 <= result.evaluations <= 8 * 10 and result.seconds < 1.0


def test_prior_map_penalizes_differences_of_the_mapped_design():
    opt = GradientDesign(LOW, HIGH, smoothness=2.0, prior_map=lambda x: x.cumsum(-1))
    x = torch.tensor([[0.5, 0.1, -0.2, 0.3]], dtype=torch.float64)
    assert float(opt.prior(x)[0]) == pytest.approx(2.0 * (0.1**2 + 0.2**2 + 0.3**2))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_infeasible_designs_never_become_the_result(name):
    # The unconstrained optimum (TARGET's box projection) is infeasible: x[0] > 0 is forbidden,
    # with a penalty that pulls designs back (iterates may still cross: only feasible ones count).
    def loss(x):
        terms = quadratic(TARGET)(x)
        terms["total"] = terms["total"] + 1.0 * torch.relu(x[:, 0])
        terms["feasible"] = (x[:, 0] <= 0).to(x.dtype)
        return terms

    result = OPTIMIZERS[name]().optimize(loss)
    assert result.design[0] <= 0 and result.terms["feasible"] == 1.0
    assert abs(float(result.design[0])) < 0.3 and (result.design[1:] - OPTIMUM[1:].double()).abs().max() < 0.3


@pytest.mark.parametrize("backtrack", [0.0, 0.1])
def test_backtracking_returns_from_a_plateau(backtrack):
    # A valley next to a cliff onto a flat plateau (as when balls end up stuck on the obstacle):
    # momentum carries Adam over the edge, where the gradient vanishes and it stays for good.
    low, high = -torch.ones(1), torch.ones(1)

    def cliff(x):
        return {"total": torch.where(x[:, 0] < 0.6, (x[:, 0] - 0.5).square(), torch.ones_like(x[:, 0]))}

    opt = GradientDesign(low, high, iterations=60, lr=0.3, backtrack=backtrack)
    result = opt.optimize(cliff, torch.tensor([-0.9]))
    error = abs(float(result.design[0]) - 0.5)
    assert (error < 0.01 and opt.backtracks > 0) if backtrack else (error > 0.02 and opt.backtracks == 0)


def plateau_with_wells(x):
    """A flat loss (zero gradient) except on narrow wells around designs on a grid: the descent cannot
    move, so the result shows where the restarts started."""
    d = (x[:, :1] - torch.tensor([0.8], dtype=x.dtype)).abs()
    return {"total": torch.where(d < 0.05, d, torch.full_like(d, 1.0)).sum(-1) + 0.01 * x[:, 1:].square().sum(-1)}


@pytest.mark.parametrize("trusted", [False, True])
def test_screen_starts_from_the_best_screened_designs_and_keeps_them_as_candidates(trusted):
    pool = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.81, 1.5, 0.4, 0.2], [0.9, 0.0, 0.0, 0.0], [0.79, 0.1, 0.0, 0.1],
                         [-0.5, 0.0, 0.0, 0.0]], dtype=torch.float64)
    drawn = []

    def sample(n, gen):
        assert isinstance(gen, torch.Generator)
        drawn.append(n)
        return pool[:n]

    batches = []

    def loss(x):
        batches.append(x.detach().clone())
        return plateau_with_wells(x)

    init = torch.tensor([-0.9, 0.0, 0.0, 0.5])
    opt = GradientDesign(LOW, HIGH, iterations=4, lr=1e-6, restarts=3, screen=5)
    result = opt.optimize(loss, init, select_fn=loss if trusted else None, sample_fn=sample)
    assert drawn == [5]
    # The screen scored the 5 candidates; the restarts are the initial design and its best 2 (wells).
    assert torch.equal(batches[0], pool)
    torch.testing.assert_close(batches[1], torch.stack([init.double(), pool[3], pool[1]]), atol=1e-6, rtol=0)
    # The descent cannot leave the plateau: the result is the best screened design, and the budget
    # counts the screen (5), 4 steps of 3 restarts, and the final selection.
    torch.testing.assert_close(result.design, pool[3], atol=1e-4, rtol=0)
    # Each restart's best and final design; the 2 screened starts keep the trusted scores the screen gave them.
    final = 3 + 3 if trusted else 3
    assert result.evaluations == 5 + 4 * 3 + final == sum(len(b) for b in batches)


def test_two_stage_screen_scores_only_the_cheap_stages_best_with_the_trusted_loss():
    pool = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.81, 1.5, 0.4, 0.2], [0.9, 0.0, 0.0, 0.0], [0.79, 0.1, 0.0, 0.1],
                         [-0.5, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    cheap_seen, trusted_seen = [], []

    def cheap(x):  # ranks the pool 5, 1, 3, 0, 2, 4: design 5 first, which the trusted loss rates worst of the three
        cheap_seen.append(x.detach().clone())
        rank = {5: 0.0, 1: 0.1, 3: 0.2, 0: 0.3, 2: 0.4, 4: 0.5}
        return {"total": torch.tensor([rank[int((pool - r).abs().sum(-1).argmin())] for r in x], dtype=x.dtype)}

    def trusted(x):
        trusted_seen.append(x.detach().clone())
        return plateau_with_wells(x)

    init = torch.tensor([-0.9, 0.0, 0.0, 0.5])
    opt = GradientDesign(LOW, HIGH, iterations=2, lr=1e-6, restarts=3, screen=6, screen_keep=3)
    result = opt.optimize(plateau_with_wells, init, select_fn=trusted, sample_fn=lambda n, gen: pool[:n],
                          screen_fn=cheap)
    # The cheap loss ranked all 6; the trusted one scored only its best 3 (designs 5, 1, 3), and the
    # restarts are the initial design and the trusted loss's best 2 of those (3, then 1).
    assert len(cheap_seen) == 1 and torch.equal(cheap_seen[0], pool)
    torch.testing.assert_close(trusted_seen[0], pool[[5, 1, 3]])
    torch.testing.assert_close(result.design, pool[3], atol=1e-4, rtol=0)
    # Evaluations: 6 cheap + 3 trusted in the screen, 2 steps of 3, each restart's best and final (6).
    assert result.evaluations == 6 + 3 + 2 * 3 + 6
    # Without a screen_fn the screen scores every candidate with the trusted loss.
    trusted_seen.clear()
    GradientDesign(LOW, HIGH, iterations=1, restarts=3, screen=6, screen_keep=3).optimize(
        plateau_with_wells, init, select_fn=trusted, sample_fn=lambda n, gen: pool[:n])
    assert torch.equal(trusted_seen[0], pool)
    # Keeping at least as many as were screened is the one-stage screen (so `screen=0` with the default keep works).
    trusted_seen.clear()
    GradientDesign(LOW, HIGH, iterations=1, restarts=3, screen=6, screen_keep=8).optimize(
        plateau_with_wells, init, select_fn=trusted, sample_fn=lambda n, gen: pool[:n], screen_fn=cheap)
    assert torch.equal(trusted_seen[0], pool)
    GradientDesign(LOW, HIGH, restarts=4, screen=0, screen_keep=12)
    with pytest.raises(ValueError, match="screen_keep"):
        GradientDesign(LOW, HIGH, restarts=4, screen=6, screen_keep=2)


def test_random_restarts_and_random_search_draw_from_the_sampler_and_a_bad_sampler_is_refused():
    seen = []
    opt = GradientDesign(LOW, HIGH, iterations=2, restarts=3)
    opt.optimize(track_bounds(quadratic(TARGET), seen), sample_fn=lambda n, gen: HIGH.double().expand(n, -1) + 5)
    torch.testing.assert_close(seen[0][1:], HIGH.double().expand(2, -1), atol=1e-3, rtol=0)  # clipped into the box
    seen.clear()  # random search draws from it too, after the initial design
    RandomDesign(LOW, HIGH, budget=5, batch=5).optimize(track_bounds(quadratic(TARGET), seen),
                                                        sample_fn=lambda n, gen: LOW.double().expand(n, -1))
    assert torch.equal(seen[0][1:], LOW.double().expand(4, -1))
    with pytest.raises(ValueError, match="2 finite designs of 4 coordinates"):
        GradientDesign(LOW, HIGH, iterations=2, restarts=3).optimize(quadratic(TARGET),
                                                                     sample_fn=lambda n, gen: torch.zeros(n, 3))
    with pytest.raises(ValueError, match="screen"):
        GradientDesign(LOW, HIGH, screen=-1)
    with pytest.raises(GndesignError, match="screen"):
        make_design_optimizer("gradient", LOW, HIGH, screen=-2)
    with pytest.raises(GndesignError, match="screen_keep"):
        make_design_optimizer("gradient", LOW, HIGH, screen_keep=-1)


def test_random_search_with_the_same_seed_scores_exactly_the_screens_designs():
    # The benchmark's ablation (the screen alone) is random search with budget screen + 1.
    def sample(n, gen):
        return LOW.double() + (HIGH - LOW).double() * torch.rand(n, 4, generator=gen, dtype=torch.float64)

    screened, searched = [], []
    GradientDesign(LOW, HIGH, iterations=1, restarts=2, screen=6, seed=3).optimize(
        track_bounds(quadratic(TARGET), screened), sample_fn=sample)
    RandomDesign(LOW, HIGH, budget=7, batch=7, seed=3).optimize(track_bounds(quadratic(TARGET), searched),
                                                                sample_fn=sample)
    assert torch.equal(searched[0][1:], screened[0])


@pytest.mark.parametrize("trusted", [True, False])
def test_gradient_keeps_its_distinct_candidates_ranked_best_first(trusted):
    """The result's runners-up (what the refined loop verifies in MuJoCo): distinct designs ranked by the
    objective that picked the result, the result first."""
    init = torch.tensor([-0.9, 0.0, 0.0, 0.5])
    pool = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.8, 1.5, 0.4, 0.2], [0.9, 0.0, 0.0, 0.0], [0.3, -0.6, 0.5, 1.0]],
                        dtype=torch.float64)
    loss = quadratic(TARGET)
    opt = GradientDesign(LOW, HIGH, iterations=5, lr=0.05, restarts=3, screen=4)
    result = opt.optimize(loss, init, select_fn=loss if trusted else None, sample_fn=lambda n, gen: pool[:n])
    c = result.candidates
    assert c is not None and c.shape[1] == 4 and len(c) >= (4 if trusted else 3)
    torch.testing.assert_close(c[0], result.design)
    obj = loss(c)["total"]
    assert bool((obj[1:] >= obj[:-1]).all())  # best first
    assert min(float((c[i] - c[j]).abs().max()) for i in range(len(c)) for j in range(i + 1, len(c))) > 1e-9
    assert bool(((c >= LOW) & (c <= HIGH)).all())
    assert result.to_dict()["candidates"] == c.tolist()
    assert CEMDesign(LOW, HIGH, population=8, elites=2, iterations=2).optimize(loss).candidates is None
