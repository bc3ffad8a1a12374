"""Policies learned through a model (planners.policy, gndesign.policy_net, workflows.policy) and the
policy-guided, asynchronous MPC (planners.gradient/sampling/mpc)."""

import logging
import time

import numpy as np
import pytest
import torch
import yaml

from gndesign.config import PolicyConfig, RunConfig, TrainConfig
from gndesign.dynamics import Dynamics
from gndesign.errors import ConfigError, GndesignError
from gndesign.policy_net import PolicyNet
from planners import CEMPlanner, GradientPlanner
from planners.base import Planner, PlanResult
from planners.mpc import run_mpc_async
from planners.policy import PolicyGuide, discounted_returns, imagine, policy_losses, with_terminal_value

DT = 0.2


class DoubleIntegrator(Dynamics):
    """A known linear model: ``v' = v + dt u``, ``x' = x + dt v'`` (differentiable)."""

    differentiable = True

    def __init__(self, bound: float = 50.0):
        super().__init__(1, 1, 1, torch.tensor([[-bound, bound]]), DT)

    def rollout(self, qpos, qvel, actions):
        qs, vs = [qpos], [qvel]
        for t in range(actions.shape[1]):
            v = vs[-1] + DT * actions[:, t]
            qs.append(qs[-1] + DT * v)
            vs.append(v)
        self.evaluations += actions.shape[0] * actions.shape[1]
        return torch.stack(qs, 1), torch.stack(vs, 1)


Q, R = np.diag([1.0, 0.1]), np.array([[0.01]])
A = np.array([[1.0, DT * DT], [0.0, 1.0]])  # state (x, v) after the semi-implicit step: x' = x + dt v + dt^2 u
A[0, 1] = DT
B = np.array([[DT * DT], [DT]])


def quadratic_reward(qpos, qvel, action):
    """Minus the LQR stage cost of the state reached and the action applied."""
    return -(Q[0, 0] * qpos[:, 0] ** 2 + Q[1, 1] * qvel[:, 0] ** 2 + R[0, 0] * action[:, 0] ** 2)


def lqr_gain() -> np.ndarray:
    """Infinite-horizon LQR for the cost of the next state: ``sum Q(x_{t+1}) + R(u_t)``."""
    P = Q.copy()
    for _ in range(2000):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + (A - B @ K).T @ P @ (A - B @ K) + K.T @ R @ K
    return np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)  # u = -K x


def lqr_cost(x0: np.ndarray, v0: np.ndarray, steps: int) -> float:
    """The LQR closed loop's total cost over ``steps`` from the states ``(x0, v0)`` (summed)."""
    K = lqr_gain()
    x = np.stack([x0, v0], 1).astype(float)
    total = 0.0
    for _ in range(steps):
        u = -x @ K.T
        x = x @ A.T + u @ B.T
        total += (x ** 2 @ np.diag(Q)).sum() + (R[0, 0] * u ** 2).sum()
    return total


def description(nq=1, nv=1, nu=1, bound=50.0, angles=(), task="test/integrator", system="integrator"):
    return {"task": task, "system": system, "mjcf_sha256": None, "nq": nq, "nv": nv, "nu": nu, "angles": list(angles),
            "ctrl_low": [-bound] * nu, "ctrl_high": [bound] * nu, "action_repeat": 1, "dynamics": "test"}


def test_policy_through_a_linear_model_reaches_the_lqr_cost():
    torch.manual_seed(0)
    dyn = DoubleIntegrator()
    policy = PolicyNet(32, 1, description())
    g = torch.Generator().manual_seed(0)
    starts = lambda n: (torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g))  # noqa: E731
    policy.set_statistics(*starts(512))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    T = 20  # 4 s: the LQR's closed loop has settled
    for _ in range(200):
        out = policy_losses(policy, dyn, quadratic_reward, *starts(32), T, gamma=1.0)
        opt.zero_grad()
        (out["actor"] + out["value"]).backward()
        opt.step()
    q0, v0 = torch.randn(256, 1, generator=g), torch.randn(256, 1, generator=g)
    with torch.no_grad():
        qs, vs, acts = imagine(dyn, policy, q0, v0, T)
        cost = -quadratic_reward(qs[:, 1:].reshape(-1, 1), vs[:, 1:].reshape(-1, 1), acts.reshape(-1, 1)).sum()
    lqr = lqr_cost(q0[:, 0].numpy(), v0[:, 0].numpy(), T)
    assert float(cost) <= 1.05 * lqr, (float(cost), lqr)


def test_gradients_reach_the_policy_through_the_rollout():
    torch.manual_seed(1)

    class Pendulum(DoubleIntegrator):  # nonlinear, so the check is not trivially linear
        def rollout(self, qpos, qvel, actions):
            qs, vs = [qpos], [qvel]
            for t in range(actions.shape[1]):
                v = vs[-1] + DT * (actions[:, t] - 9.81 * torch.sin(qs[-1]))
                qs.append(qs[-1] + DT * v)
                vs.append(v)
            return torch.stack(qs, 1), torch.stack(vs, 1)

    dyn = Pendulum(bound=2.0)
    policy = PolicyNet(8, 1, description(bound=2.0, angles=[0])).double()
    q0, v0 = torch.randn(4, 1, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    reward = lambda q, v, a: torch.cos(q[:, 0]) - 0.1 * v[:, 0] ** 2 - 0.01 * a[:, 0] ** 2  # noqa: E731

    def loss():
        return policy_losses(policy, dyn, reward, q0, v0, 6, gamma=0.9, smoothness=0.1)["actor"]

    weight = policy.actor[0].weight
    loss().backward()
    analytic = weight.grad.clone()
    assert analytic.abs().max() > 1e-6
    eps = 1e-6
    for idx in [(0, 0), (3, 1), (7, 2)]:
        with torch.no_grad():
            weight[idx] += eps
            up = float(loss())
            weight[idx] -= 2 * eps
            down = float(loss())
            weight[idx] += eps
        assert (up - down) / (2 * eps) == pytest.approx(float(analytic[idx]), rel=1e-4, abs=1e-8)
    # the actor's loss bootstraps from the value without training it
    assert policy.critic[0].weight.grad is None or float(policy.critic[0].weight.grad.abs().max()) == 0.0


def test_discounted_returns():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    out = discounted_returns(r, torch.tensor([10.0]), 0.5)
    assert out.tolist() == [[1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10, 2 + 0.5 * 3 + 0.25 * 10, 3 + 0.5 * 10]]


def test_guided_planner_starts_from_the_policys_rollout():
    dyn = DoubleIntegrator(bound=1.0)
    policy = PolicyNet(8, 1, description(bound=1.0))
    cost = lambda q, v, a: -quadratic_reward(q[:, 1:].reshape(-1, 1), v[:, 1:].reshape(-1, 1),  # noqa: E731
                                             a.reshape(-1, 1)).reshape(a.shape[0], -1).sum(1)
    q0, v0 = torch.tensor([[1.0], [-0.5]]), torch.tensor([[0.0], [0.3]])
    H = 12
    planner = GradientPlanner(dyn, cost, H, iterations=2, restarts=4)
    planner.guide = PolicyGuide(policy, dyn)
    init = torch.zeros(2, H, 1)
    with torch.no_grad():
        expected = imagine(dyn, policy, q0, v0, H)[2]
    starts = planner.starts(init, planner.guide(q0, v0, init))
    assert starts.shape == (2, 4, H, 1)
    torch.testing.assert_close(starts[:, 0], expected)
    torch.testing.assert_close(starts[:, 1], init)  # then the warm start
    result = planner.plan(q0, v0)  # the plan is never worse than the policy's own
    with torch.no_grad():
        assert (result.cost <= cost(*dyn.rollout(q0, v0, expected), expected) + 1e-5).all()
    cem = CEMPlanner(dyn, cost, H, population=8, elites=2, iterations=1)
    cem.guide = planner.guide
    seen = []
    cem.evaluate = lambda q, v, a: seen.append(a.clone()) or torch.zeros(a.shape[:2])
    cem.plan(q0, v0)
    torch.testing.assert_close(seen[0][:, 1], expected)


def test_terminal_value_and_nonfinite_policy_fallback(caplog):
    dyn = DoubleIntegrator(bound=1.0)
    policy = PolicyNet(8, 1, description(bound=1.0))
    base = lambda q, v, a: torch.zeros(a.shape[0])  # noqa: E731
    q, v = torch.zeros(3, 5, 1), torch.ones(3, 5, 1)
    total = with_terminal_value(base, policy, 2.0)(q, v, torch.zeros(3, 4, 1))
    torch.testing.assert_close(total, -2.0 * policy.value(q[:, -1], v[:, -1]))
    assert with_terminal_value(base, policy, 0.0) is base
    with torch.no_grad():
        policy.actor[-1].bias.fill_(float("nan"))
    guide = PolicyGuide(policy, dyn)
    init = torch.full((2, 6, 1), 0.25)
    with caplog.at_level(logging.WARNING):
        plan = guide(torch.zeros(2, 1), torch.zeros(2, 1), init)
    torch.testing.assert_close(plan, init)
    assert "not finite" in caplog.text and guide.fallbacks == 2


class _Clock:
    """A fake environment whose state is the step count (``qpos = [t]``)."""

    def reset(self):
        self.t = 0
        return torch.zeros(1, 1), torch.zeros(1, 1)

    def step(self, actions):
        self.t += 1
        return [0.0], torch.full((1, 1), float(self.t)), torch.zeros(1, 1)


class _SlowPlanner(Planner):
    """Plans ``a_j = s + j`` from the state of step ``s``, slowly: the plan's entry for step ``t``
    is ``t`` exactly when the controller indexes it by its true age."""

    name = "slow"

    def optimize(self, qpos, qvel, init):
        time.sleep(0.004)
        plan = qpos[:, None, :1] + torch.arange(self.horizon, dtype=torch.float32)[None, :, None]
        return PlanResult(plan, torch.zeros(qpos.shape[0]))


def test_asynchronous_controller_never_acts_on_a_plan_older_than_it_reports():
    dyn = DoubleIntegrator(bound=1e6)
    planner = _SlowPlanner(dyn, lambda q, v, a: torch.zeros(a.shape[0]), horizon=400)
    rec = run_mpc_async(_Clock(), planner, 150, control_timestep=0.001)
    acted = [a[0] for a in rec.actions]
    assert acted == [float(t) for t in range(150)]  # entry t - s of the plan from step s
    assert min(rec.plan_ages) >= 0 and max(rec.plan_ages) > 0  # it acted on older plans, at their age
    assert len(rec.latencies) > 1 and rec.summary()["plan_age_max_steps"] == max(rec.plan_ages)


def test_policy_config_is_validated_and_round_trips():
    cfg = RunConfig(train=TrainConfig(), policy=PolicyConfig(horizon=64))
    assert cfg.family == "policy"
    again = RunConfig.from_dict(cfg.to_dict())
    assert again.policy == cfg.policy and RunConfig.from_dict(RunConfig().to_dict()).policy is None
    for bad in ({"discount": 1.5}, {"horizon": 0}, {"init_fraction": 0.8, "imagined_fraction": 0.5},
                {"near_fraction": 1.5}, {"near_scale": 0.0}, {"near_scale": 2.0}):
        with pytest.raises(ConfigError):
            RunConfig(policy=PolicyConfig(**bad)).validate()


def test_policy_refuses_states_of_another_size():
    policy = PolicyNet(8, 1, description())
    with pytest.raises(GndesignError, match="another system"):
        policy(torch.zeros(2, 3), torch.zeros(2, 1))


def test_train_resume_eval_and_bad_input(tmp_path, cartpole_data):
    from envs.tasks import get_task
    from workflows.cli import main
    from workflows.policy import eval_policy, load_policy, train_policy

    out = tmp_path / "run"
    small = {"horizon": 2, "hidden_size": 8}
    train = {"steps": 3, "batch_size": 4}
    train_policy("pretrained:cartpole", "cartpole", out, [str(cartpole_data)], small, train, progress=False,
                 init_samples=8, max_new_steps=2)
    summary = train_policy("pretrained:cartpole", "cartpole", out, [str(cartpole_data)], small, train, resume=True,
                           progress=False, init_samples=8)
    assert summary["step"] == 3
    with pytest.raises(GndesignError, match="already holds a run"):
        train_policy("pretrained:cartpole", "cartpole", out, [str(cartpole_data)], small, train, progress=False,
                     init_samples=8)
    ckpt = out / "checkpoints" / "latest.pt"
    result = eval_policy(str(ckpt), "cartpole-swingup", 2, 100, steps=16)
    assert len(result["episodes"]) == 2 and np.isfinite(result["return_mean"]) and result["chatter_mean"] >= 0
    with pytest.raises(GndesignError, match="trained for system 'cartpole'"):
        load_policy(str(ckpt), get_task("swimmer6"))
    from envs.task_files import find_task, save_task_file

    blind = find_task("swimmer6")
    blind.policy = {}  # a target drawn per episode, but nothing said about what a policy sees of it
    save_task_file(blind, tmp_path / "blind.yaml")
    with pytest.raises(GndesignError, match="does not say what a policy observes"):
        train_policy("pretrained:swimmer6", str(tmp_path / "blind.yaml"), tmp_path / "s", [str(cartpole_data)],
                     progress=False)
    assert main(["policy", "train", "--model", "pretrained:cartpole", "--out", str(tmp_path / "x"),
                 "--set", "planner.iterations=3"]) == 2
    # --minutes alone is a time budget: the default step count (2000) does not cut it short.
    from workflows.train import NO_STEP_LIMIT

    assert main(["policy", "train", "--model", "pretrained:cartpole", "--task", "cartpole",
                 "--data", str(cartpole_data), "--out", str(tmp_path / "timed"), "--minutes", "0.002",
                 "--set", "policy.horizon=2", "--set", "policy.hidden_size=8", "--set", "train.batch_size=4",
                 "--quiet"]) == 0
    saved = yaml.safe_load((tmp_path / "timed" / "config.yaml").read_text())["train"]
    assert saved["minutes"] == 0.002 and saved["steps"] == NO_STEP_LIMIT
    assert main(["plan", "cartpole", "--model", "pretrained:cartpole", "--control-steps", "4", "--async",
                 "--quiet"]) == 2  # --async needs --policy


def test_gradient_planner_smoothness_cost():
    dyn = DoubleIntegrator(bound=1.0)
    planner = GradientPlanner(dyn, lambda q, v, a: torch.zeros(a.shape[0]), 4, smoothness=2.0)
    a = torch.tensor([0.0, 1.0, 1.0, -1.0])[None, None, :, None]
    assert planner.chatter_cost(a, torch.tensor([[0.5]])).item() == pytest.approx(2.0 * (0.25 + 1 + 0 + 4))
    smooth = planner.plan(torch.zeros(1), torch.zeros(1)).actions  # no task cost: it keeps the midpoint
    assert float(smooth.abs().max()) < 0.05


def test_asynchronous_controller_falls_back_on_the_reflex_for_stale_plans():
    dyn = DoubleIntegrator(bound=1e6)
    planner = _SlowPlanner(dyn, lambda q, v, a: torch.zeros(a.shape[0]), horizon=400)
    rec = run_mpc_async(_Clock(), planner, 150, control_timestep=0.001, reflex=lambda q, v: torch.full((1, 1), -1.0),
                        max_age=2)
    for a, age in zip(rec.actions, rec.plan_ages, strict=True):
        assert a[0] == -1.0 if age > 2 else a[0] >= 0
    assert 0 < rec.reflex_steps == sum(age > 2 for age in rec.plan_ages)
    policy = PolicyNet(8, 1, description(bound=1.0))
    guide = PolicyGuide(policy, DoubleIntegrator(bound=1.0))
    q, v = torch.ones(2, 1), torch.zeros(2, 1)
    torch.testing.assert_close(guide.reflex(q, v), policy(q, v))


def test_shipped_policy_swings_the_cartpole_up_in_mujoco_and_guides_the_demo_planner():
    """pretrained:cartpole-policy (learned only through pretrained:cartpole-k8) scores >= 800 alone on
    a full dm_control episode (10-episode mean 860 when shipped) and is the demo planner's guide."""
    from envs.tasks import get_task
    from workflows.plan import DEMO_MODEL, DEMO_PLANNER, DEMO_POLICY, plan_episodes
    from workflows.policy import eval_policy, load_policy

    net, blob = load_policy(DEMO_POLICY, get_task("cartpole-swingup"))
    assert net.action_repeat == 8 and blob["policy"]["dynamics"] == DEMO_MODEL
    assert eval_policy(DEMO_POLICY, "cartpole-swingup", 1, 100)["return_mean"] >= 800
    out = plan_episodes("cartpole-swingup", DEMO_MODEL, "gradient", 1, 100, 16, policy=DEMO_POLICY,
                        progress=False, **DEMO_PLANNER)
    assert out["episodes"][0]["decisions"] == 2 and np.isfinite(out["return_mean"])


class _Target:
    """A double integrator's target ``p`` drawn per episode; the policy sees ``x - p`` only."""

    def draw(self, n, gen):
        return {"target": 2 * torch.randn(n, 1, generator=gen)}

    def observe(self, qpos, qvel, params):
        return qpos - params["target"]


def tracking_reward(qpos, qvel, action, params):
    return quadratic_reward(qpos - params["target"], qvel, action)


def test_a_policy_that_sees_the_task_context_tracks_drawn_targets_at_the_lqr_cost():
    """Translation-invariant tracking: the policy does not see x (``ignore``), only ``x - p`` from
    the context, and must reach the LQR cost of the shifted problem (within 5%)."""
    torch.manual_seed(0)
    dyn, ctx = DoubleIntegrator(), _Target()
    policy = PolicyNet(32, 1, dict(description(), ignore=[0], context=["error"], context_dim=1))
    assert policy.obs_dim == 2  # velocity and context: x itself is not seen
    g = torch.Generator().manual_seed(0)
    starts = lambda n: (3 * torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g))  # noqa: E731
    q, v = starts(512)
    policy.set_statistics(q, v, ctx.observe(q, v, ctx.draw(512, g)))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    T = 20
    for _ in range(200):
        out = policy_losses(policy, dyn, tracking_reward, *starts(32), T, gamma=1.0, context=ctx,
                            params=ctx.draw(32, g))
        opt.zero_grad()
        (out["actor"] + out["value"]).backward()
        opt.step()
    assert out["states"][2]["target"].shape == (32 * T, 1)  # each imagined state keeps its episode's target
    q0, v0 = starts(256)
    params = ctx.draw(256, g)
    with torch.no_grad():
        qs, vs, acts = imagine(dyn, policy, q0, v0, T, lambda q, v: ctx.observe(q, v, params))
        rows = {"target": params["target"].repeat_interleave(T, 0)}
        cost = -tracking_reward(qs[:, 1:].reshape(-1, 1), vs[:, 1:].reshape(-1, 1), acts.reshape(-1, 1), rows).sum()
    lqr = lqr_cost((q0 - params["target"])[:, 0].numpy(), v0[:, 0].numpy(), T)
    assert float(cost) <= 1.05 * lqr, (float(cost), lqr)
    with torch.no_grad():  # the ignored coordinate does not matter, the context does
        torch.testing.assert_close(policy(q0, v0, q0 - params["target"]), policy(q0 + 5, v0, q0 - params["target"]))
        assert not torch.allclose(policy(q0, v0, q0), policy(q0, v0, q0 + 1))
    with pytest.raises(GndesignError, match="observes 1 task context"):
        policy(q0, v0)


def test_trainer_keeps_each_buffered_state_with_its_parameters():
    from planners.policy import PolicyTrainer

    cfg = RunConfig(train=TrainConfig(batch_size=8), policy=PolicyConfig(horizon=3, spread_fraction=0.0))
    ctx = _Target()
    states = (torch.randn(50, 1), torch.randn(50, 1))
    trainer = PolicyTrainer(cfg, lambda: PolicyNet(8, 1, dict(description(), context=["e"], context_dim=1)),
                            DoubleIntegrator(), tracking_reward, states, states, context=ctx)
    trainer.model = trainer.build_model()
    trainer.init_statistics(0)
    g = torch.Generator().manual_seed(0)
    q, v, params = trainer.starts(g)
    assert params["target"].shape == (8, 1)
    rows = torch.arange(64.0)[:, None]  # 64 imagined states, each marked by its row, as is its target
    trainer.remember(rows.clone(), torch.zeros(64, 1), {"target": rows.clone()}, g)
    trainer.remember(rows + 100, torch.zeros(64, 1), {"target": rows + 100}, g)
    assert trainer.buffer[0].shape == (16, 1) and len(set(trainer.buffer[0][:, 0].tolist())) == 16
    bq, _, bp = trainer._draw(trainer.buffer, 40, g)  # buffered draws: the state and its target travel together
    torch.testing.assert_close(bq, bp["target"])
    assert len(set(bq[:, 0].tolist())) > 1


def test_swimmer_task_context_is_the_target_in_the_head_frame():
    """swimmerN.yaml: a policy sees the nose-to-target vector in the head frame (dm_control's
    ``to_target``) and not the root position: moving the swimmer and its target together, or
    turning both about the root, changes nothing it sees."""
    from envs.tasks import get_task

    task = get_task("swimmer6")
    assert task.policy_observe == ["nose_to_target"] and task.policy_ignore == [0, 1]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, task.tree.nq, generator=g, dtype=torch.float64)
    v = torch.zeros(4, task.tree.nv, dtype=torch.float64)
    target = torch.cat([torch.randn(4, 2, generator=g, dtype=torch.float64), torch.full((4, 1), 0.05)], 1)
    seen = task.observation(q, v, {"target": target})
    assert seen.shape == (4, 2)
    torch.testing.assert_close(seen, task.quantities(q, v, torch.zeros(4, task.tree.nu), {"target": target})
                               ["nose_to_target"])
    shift = torch.tensor([0.7, -1.3, 0.0], dtype=torch.float64)
    moved = q.clone()
    moved[:, :2] += shift[:2]
    torch.testing.assert_close(task.observation(moved, v, {"target": target + shift}), seen)
    turn = 0.8
    c, s = np.cos(turn), np.sin(turn)
    rot = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    anchor = torch.tensor([0.0, -0.05], dtype=torch.float64)  # rootz's axis: 5 cm behind the head's origin
    turned = q.clone()
    turned[:, :2] = (q[:, :2] + anchor) @ rot[:2, :2].T - anchor  # the world turned about the origin
    turned[:, 2] += turn
    torch.testing.assert_close(task.observation(turned, v, {"target": target @ rot.T}), seen)


def test_task_context_draws_near_targets_and_initial_states_carry_the_envs_targets():
    from envs.tasks import get_task
    from workflows.policy import TaskContext, initial_states, task_context

    task = get_task("swimmer6")
    g = torch.Generator().manual_seed(0)
    far = TaskContext(task).draw(400, g)["target"]
    near = TaskContext(task, near_fraction=1.0, near_scale=0.25).draw(400, g)["target"]
    assert far[:, :2].abs().max() > 1.5 and near[:, :2].abs().max() <= 0.5 + 1e-6
    assert torch.all(near[:, 2] == far[0, 2])  # an element without a range keeps its value
    half = TaskContext(task, near_fraction=0.5, near_scale=0.25).draw(400, g)["target"]
    assert 0.35 < float((half[:, :2].abs().max(1).values <= 0.5).float().mean()) < 0.8
    q, v, params = initial_states(task, 6, seed=3)  # dm_control's resets: their targets come along
    env = task.make_env(3)
    env.reset()
    np.testing.assert_allclose(params["target"][0].numpy(), task.env_params(env)["target"], rtol=1e-6)
    assert len(initial_states(get_task("cartpole-swingup"), 2, seed=0)) == 2  # no parameters, no third part
    assert task_context(get_task("cartpole-swingup")) is None


def test_shipped_swimmer_policy_sees_its_target_and_guides_the_coarse_planner():
    """pretrained:swimmer6-policy (learned only through pretrained:swimmer6-k4) observes the target in
    the head frame, not the root position; it acts in MuJoCo and guides the k = 4 planner."""
    from envs.tasks import get_task
    from workflows.plan import plan_episodes
    from workflows.policy import eval_policy, load_policy

    task = get_task("swimmer6")
    net, blob = load_policy("pretrained:swimmer6-policy", task)
    d = blob["policy"]
    assert net.action_repeat == 4 and d["dynamics"] == "pretrained:swimmer6-k4"
    assert d["context"] == ["nose_to_target"] and net.context_dim == 2 and d["ignore"] == [0, 1]
    q, v = torch.zeros(2, 8), torch.zeros(2, 8)
    with torch.no_grad():
        assert not torch.allclose(net(q, v, torch.tensor([[0.5, 0.0], [0.0, 0.5]])),
                                  net(q, v, torch.tensor([[0.0, 0.5], [0.5, 0.0]])))
        moved = q.clone()
        moved[:, :2] += 3.0  # rootx, rooty: not seen
        torch.testing.assert_close(net(q, v, torch.ones(2, 2)), net(moved, v, torch.ones(2, 2)))
    out = eval_policy("pretrained:swimmer6-policy", "swimmer6", 2, 100, steps=40)
    assert np.isfinite(out["return_mean"]) and out["action_repeat"] == 4
    guided = plan_episodes("swimmer6", "pretrained:swimmer6-k4", "gradient", 2, 100, 8, replan_every=4, horizon=32,
                           options={"iterations": 1, "restarts": 2}, progress=False, lockstep=2,
                           policy="pretrained:swimmer6-policy")
    assert guided["episodes"][0]["decisions"] == 2 and np.isfinite(guided["return_mean"])
