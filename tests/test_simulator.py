"""The learned simulator's physics wrapper: exact target inverse, differentiability, models."""

from dataclasses import replace

import pytest
import torch

from gndesign.config import ModelConfig, SolverConfig
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import ConfigError
from gndesign.forward_training import system_spec
from gndesign.graphs import EDGE_STATIC, GraphBuilder
from gndesign.simulator import (
    GraphNetworkSimulator,
    Transitions,
    build_model,
    dynamics_targets,
    integrate_prediction,
)

SMALL = ModelConfig(latent_size=16, mlp_hidden_size=16, mlp_layers=1, message_passing_steps=2)


def transitions(ds, dtype=torch.float64):
    T = ds.steps
    q = torch.as_tensor(ds.qpos, dtype=dtype)
    v = torch.as_tensor(ds.qvel, dtype=dtype)
    a = torch.as_tensor(ds.action, dtype=dtype)
    n = q.shape[0] * T
    params = {k: torch.as_tensor(p, dtype=dtype).repeat_interleave(T, 0) for k, p in ds.params.items()}
    return Transitions(ds.system, q[:, :-1].reshape(n, -1), v[:, :-1].reshape(n, -1), a.reshape(n, -1), params,
                       q[:, 1:].reshape(n, -1), v[:, 1:].reshape(n, -1))


@pytest.mark.parametrize("fixture", ["cartpole_data", "swimmer_data"])
def test_targets_are_the_exact_inverse_of_decoding(fixture, request):
    """Integrating the targets reproduces MuJoCo's next states, substeps included."""
    ds = TrajectoryDataset.load(request.getfixturevalue(fixture))
    model = build_model(SMALL, [system_spec(ds)])
    tree, dt = model.tree(), ds.control_timestep
    b = transitions(ds)
    acc, corr = dynamics_targets(tree, b.qpos, b.qvel, b.qpos_next, b.qvel_next, dt)
    q, v = integrate_prediction(tree, b.qpos, b.qvel, acc, corr, dt)
    assert torch.allclose(q, b.qpos_next, atol=1e-10) and torch.allclose(v, b.qvel_next, atol=1e-10)
    if ds.system == "swimmer4":  # several substeps: plain semi-implicit Euler would be off
        assert corr.abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["gn", "mlp"])
def test_gradients_reach_states_actions_and_parameters(kind, cartpole_data):
    ds = TrajectoryDataset.load(cartpole_data)
    model = build_model(ModelConfig(kind=kind, latent_size=16, mlp_hidden_size=16, mlp_layers=1), [system_spec(ds)])
    b = transitions(ds, torch.float32)
    model.accumulate_statistics(b)
    q = b.qpos[:5].clone().requires_grad_(True)
    v = b.qvel[:5].clone().requires_grad_(True)
    a = b.action[:5].clone().requires_grad_(True)
    mass = b.params["body_mass"][:5].clone().requires_grad_(True)
    params = dict({k: p[:5] for k, p in b.params.items()}, body_mass=mass)
    qs, vs = model.rollout(q, v, a[:, None].expand(5, 4, 1), params=params)
    assert qs.shape == (5, 5, 2) and vs.shape == (5, 5, 2)
    (qs[:, -1].pow(2).sum() + vs[:, -1].pow(2).sum()).backward()
    for t in (q, v, a, mass):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_checkpointed_rollout_gives_the_same_gradients(cartpole_data):
    ds = TrajectoryDataset.load(cartpole_data)
    model = build_model(SMALL, [system_spec(ds)])
    b = transitions(ds, torch.float32)
    model.accumulate_statistics(b)
    grads = []
    for ckpt in (False, True):
        a = torch.zeros(3, 6, 1, requires_grad=True)
        qs, _ = model.rollout(b.qpos[:3], b.qvel[:3], a, checkpoint=ckpt)
        qs.sum().backward()
        grads.append(a.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_tiny_model_overfits_a_few_transitions(cartpole_data):
    torch.manual_seed(0)
    ds = TrajectoryDataset.load(cartpole_data)
    model = build_model(ModelConfig(latent_size=32, mlp_hidden_size=32, message_passing_steps=1), [system_spec(ds)])
    b = transitions(ds, torch.float32)
    few = Transitions(b.system, b.qpos[:16], b.qvel[:16], b.action[:16], {k: v[:16] for k, v in b.params.items()},
                      b.qpos_next[:16], b.qvel_next[:16])
    model.accumulate_statistics(b)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss([few]).item()
    for _ in range(300):
        loss = model.loss([few])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first and loss.item() < 1e-2


def test_mlp_refuses_several_systems(cartpole_data, swimmer_data):
    specs = [system_spec(TrajectoryDataset.load(p)) for p in (cartpole_data, swimmer_data)]
    with pytest.raises(ConfigError, match="exactly one system"):
        build_model(ModelConfig(kind="mlp"), specs)
    gn = build_model(SMALL, specs)
    with pytest.raises(ConfigError, match="several systems"):
        gn.builder()
    with pytest.raises(ConfigError, match="unknown to this model"):
        gn.builder("acrobot")


def test_bad_model_config_is_refused():
    with pytest.raises(ConfigError, match="model.kind"):
        ModelConfig(kind="transformer").validate()


def test_position_noise_can_leave_the_correction_target_clean(cartpole_data):
    """With ``qpos_clean`` the position-correction target ignores the (unpredictable) input noise,
    while the acceleration target stays noise-corrected."""
    ds = TrajectoryDataset.load(cartpole_data)
    model = build_model(SMALL, [system_spec(ds)])
    b = transitions(ds)
    noisy = b.qpos + 1e-3 * torch.randn_like(b.qpos)
    dirty = Transitions(b.system, noisy, b.qvel, b.action, b.params, b.qpos_next, b.qvel_next)
    clean = Transitions(b.system, noisy, b.qvel, b.action, b.params, b.qpos_next, b.qvel_next, qpos_clean=b.qpos)
    acc_d, corr_d = model.raw_targets(dirty)
    acc_c, corr_c = model.raw_targets(clean)
    _, corr_true = model.raw_targets(b)  # the noise-free transition
    assert torch.equal(acc_d, acc_c)
    assert torch.allclose(corr_c, corr_true)
    assert (corr_d - corr_true).abs().max() > 1e-2  # noise/dt would swamp the real correction


def test_message_passing_covers_the_deepest_tree_unless_set(cartpole_data, swimmer_data):
    """Unset, ``message_passing_steps`` becomes the deepest tree's depth (at least 2) and is kept
    in the model's config (so checkpoints save it resolved); an explicit value is kept."""
    cart, swim = (system_spec(TrajectoryDataset.load(p)) for p in (cartpole_data, swimmer_data))
    assert cart.builder().tree.depth() == 2 and swim.builder().tree.depth() == 4  # world-cart-pole; 4 links
    auto = ModelConfig(latent_size=8, mlp_hidden_size=8, mlp_layers=1)
    assert auto.message_passing_steps is None
    model = build_model(auto, [cart, swim])
    assert model.config.message_passing_steps == 4 and len(model.predictor.processor) == 4
    assert build_model(ModelConfig(latent_size=8, mlp_hidden_size=8), [cart]).config.message_passing_steps == 2
    fixed = build_model(ModelConfig(latent_size=8, mlp_hidden_size=8, message_passing_steps=1), [swim])
    assert fixed.config.message_passing_steps == 1 and len(fixed.predictor.processor) == 1
    with pytest.raises(ConfigError, match="message_passing_steps must be >= 0"):
        ModelConfig(message_passing_steps=-1).validate()


def test_one_graph_network_serves_several_systems_with_the_same_weights(cartpole_data, swimmer_data):
    """A multi-system model has one set of weights: a batch of one system gives the same predictions
    alone as inside a mixed batch, and every weight receives gradient from either system's loss."""
    datasets = [TrajectoryDataset.load(p) for p in (cartpole_data, swimmer_data)]
    torch.manual_seed(0)
    model = build_model(SMALL, [system_spec(ds) for ds in datasets]).double()
    batches = [transitions(ds) for ds in datasets]
    for b in batches:
        model.accumulate_statistics(b)
    mixed = model.predict_normalized(batches)
    for b, pred in zip(batches, mixed, strict=True):
        torch.testing.assert_close(model.predict_normalized([b])[0], pred)
    for b in batches:
        model.zero_grad()
        model.loss([b]).backward()
        # the last step's node and global updates feed no decoder (the edges are decoded)
        missing = [n for n, p in model.named_parameters() if (p.grad is None or not p.grad.any())
                   and not n.startswith(("predictor.processor.1.node_block", "predictor.processor.1.global_block"))]
        assert not missing, (b.system, missing)


def test_per_system_depth_runs_each_system_to_its_own_trees_depth(cartpole_data, swimmer_data):
    """With ``model.per_system_depth`` cartpole (depth 2) passes through the first 2 of the 4 blocks
    and swimmer4 through all 4: the later blocks leave cartpole's predictions unchanged, the lean
    and reference paths agree, a mixed batch equals the systems alone; a C-GNS refuses it."""
    datasets = [TrajectoryDataset.load(p) for p in (cartpole_data, swimmer_data)]
    specs = [system_spec(ds) for ds in datasets]
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_size=16, mlp_hidden_size=16, mlp_layers=1, per_system_depth=True),
                        specs).double()
    assert model.config.message_passing_steps == 4
    assert [model.processor_steps(ds.system) for ds in datasets] == [2, 4]
    batches = [transitions(ds) for ds in datasets]
    for b in batches:
        model.accumulate_statistics(b)
    ref = model.predict_normalized(batches)  # weights that take gradients: the reference path, one pass per depth
    for b, pred in zip(batches, ref, strict=True):
        torch.testing.assert_close(model.predict_normalized([b])[0], pred)
    with torch.no_grad():
        assert all(model.lean_step(b.system, model.builder(b.system).static_graph(b.params, b.qpos.shape[0], b.qpos),
                                   b.qpos) is not None for b in batches)
        lean = model.predict_normalized(batches)
        for a, b in zip(lean, ref, strict=True):
            torch.testing.assert_close(a, b)
        for p in model.predictor.processor[2].parameters():
            p.add_(0.5)
        moved = model.predict_normalized(batches)
        torch.testing.assert_close(moved[0], ref[0])
        assert not torch.allclose(moved[1], ref[1])
        model.config.per_system_depth = False  # all four blocks for cartpole too
        assert not torch.allclose(model.predict_normalized(batches[:1])[0], ref[0])
    with pytest.raises(ConfigError, match="per_system_depth is an option of the graph network"):
        ModelConfig(kind="mlp", per_system_depth=True).validate()
    with pytest.raises(ConfigError, match="per_system_depth is for forward models, not a C-GNS"):
        GraphNetworkSimulator(ModelConfig(per_system_depth=True), specs, solver=SolverConfig())


def test_recurrent_core_serves_a_deeper_unseen_tree_to_its_own_depth(cartpole_data, swimmer_data):
    """Shared weights with ``model.per_system_depth`` make a recurrent core: a model that trained on
    cartpole (depth 2) only, with room for 6 steps, runs its one block 4 times on swimmer4 added for
    zero-shot use, exactly what the same weights give with 4 steps for every system, and still 2 on
    cartpole; the lean path agrees."""
    datasets = [TrajectoryDataset.load(p) for p in (cartpole_data, swimmer_data)]
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_size=16, mlp_hidden_size=16, mlp_layers=1, shared_weights=True,
                                    per_system_depth=True, message_passing_steps=6),
                        [system_spec(datasets[0])]).double()
    assert len(model.predictor.processor) == 1
    cart, swim = (transitions(ds) for ds in datasets)
    model.accumulate_statistics(cart)
    model.add_system(system_spec(datasets[1]))
    assert [model.processor_steps(ds.system) for ds in datasets] == [2, 4]
    ref = model.predict_normalized([cart, swim])  # weights that take gradients: the reference path
    with torch.no_grad():
        assert model.lean_step(swim.system, model.builder(swim.system).static_graph(swim.params, swim.qpos.shape[0],
                                                                                    swim.qpos), swim.qpos) is not None
        lean = model.predict_normalized([cart, swim])
        model.config.per_system_depth, model.config.message_passing_steps = False, 4
        four = model.predict_normalized([cart, swim])
    for a, b in zip(lean, ref, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(four[1], ref[1])
    assert not torch.allclose(four[0], ref[0])


def test_targets_and_inputs_are_normalized_per_trained_system_and_pooled_for_new_ones(cartpole_data, swimmer_data):
    """Each trained system's targets (and dynamic inputs) are standardized with its own statistics
    (so one system's scale neither weighs its errors over another's nor hides its inputs); a system
    added later with ``statistics="pooled"`` uses the pooled statistics; a state dict without
    per-system statistics (written before them) loads and predicts as pooled."""
    cart_ds, swim_ds = (TrajectoryDataset.load(p) for p in (cartpole_data, swimmer_data))
    cart, swim = (transitions(ds) for ds in (cart_ds, swim_ds))
    model = build_model(SMALL, [system_spec(cart_ds), system_spec(swim_ds)]).double()
    for b in (cart, swim):
        model.accumulate_statistics(b)
    for b in (cart, swim):
        target, mask = model.targets(b)
        hinges = target[:, hinge_edges(model, b.system), 0]  # the acceleration slot of each hinge
        assert abs(float(hinges.mean())) < 1e-6 and abs(float(hinges.std()) - 1) < 0.05, b.system

    # Inputs: each system's own statistics for the dynamic features, the pooled ones for the static
    # features and globals (what tells the systems apart).
    Fs = len(EDGE_STATIC)
    cart_in, swim_in = (model.input_stats(s, cart.qpos) for s in ("cartpole", "swimmer4"))
    for st in (cart_in, swim_in):
        torch.testing.assert_close(st["edge"][1][:Fs], model.edge_norm.std[:Fs])
        torch.testing.assert_close(st["global"][1], model.global_norm.std)
    force = GraphBuilder.feature_names()["edge"].index("force_0")
    g = model.builder("swimmer4").build_tensors(swim.qpos, swim.qvel, swim.action, swim.params)
    torch.testing.assert_close(swim_in["edge"][1][force], g.edge_attr[:, force].std(correction=0).clamp_min(1e-3))
    assert float(cart_in["edge"][1][force]) > 10 * float(swim_in["edge"][1][force])

    pooled = build_model(SMALL, [system_spec(cart_ds), system_spec(swim_ds)]).double()
    own = ("system_target_norm", "system_input_norm")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(own)}
    pooled.load_state_dict(state)
    target, _ = pooled.targets(cart)
    hinge = target[:, hinge_edges(model, "cartpole"), 0]
    assert abs(float(hinge.std()) - 1) > 0.05  # the swimmer's hinges widen the pooled statistics
    torch.testing.assert_close(pooled.system_target_norm["s0"]["hinge"].sum, model.target_norm["hinge"].sum)
    torch.testing.assert_close(pooled.input_stats("swimmer4", cart.qpos)["edge"][1], model.edge_norm.std)

    only_cart = build_model(SMALL, [system_spec(cart_ds)]).double()
    only_cart.accumulate_statistics(cart)
    only_cart.add_system(system_spec(swim_ds), "pooled")  # zero-shot: the pooled (here: cartpole's) statistics
    torch.testing.assert_close(only_cart._type_stats("swimmer4", swim.qpos)[1][hinge_edges(only_cart, "swimmer4")[-1]],
                               only_cart.target_norm["hinge"].std.to(swim.qpos))


def hinge_edges(model, system: str) -> list[int]:
    return [e for e, t in enumerate(model.tree(system).edge_type) if t == "hinge"]


def test_edge_target_stats_standardize_each_joint_edge_of_a_trained_system(cartpole_data, swimmer_data):
    """With ``model.edge_target_stats`` every joint edge's targets of a trained system have mean 0
    and std 1 on its own data (per type, the swimmer's root hinge and its body hinges share one
    scale); unused slots keep (0, 1); a system added later keeps the per-type statistics;
    the MLP refuses the option."""
    swim_ds, cart_ds = (TrajectoryDataset.load(p) for p in (swimmer_data, cartpole_data))
    swim = transitions(swim_ds)
    per_type = build_model(SMALL, [system_spec(swim_ds)]).double()
    per_edge = build_model(replace(SMALL, edge_target_stats=True), [system_spec(swim_ds)]).double()
    for m in (per_type, per_edge):
        m.accumulate_statistics(swim)
    hinges = hinge_edges(per_edge, "swimmer4")
    edge_y = per_edge.targets(swim)[0][:, hinges, 0]
    edge_std = edge_y.std(0, correction=0)
    torch.testing.assert_close(edge_std, torch.ones_like(edge_std), atol=1e-6, rtol=0)
    torch.testing.assert_close(edge_y.mean(0), torch.zeros_like(edge_std), atol=1e-6, rtol=0)
    type_std = per_type.targets(swim)[0][:, hinges, 0].std(0, correction=0)
    assert float(type_std.max() / type_std.min()) > 1.2  # pooled over hinges, the edges' scales differ
    mean, std = per_edge._type_stats("swimmer4", swim.qpos)
    unused = ~per_edge._slot_mask("swimmer4")
    assert bool((mean[unused] == 0).all()) and bool((std[unused] == 1).all())
    per_edge.add_system(system_spec(cart_ds), "pooled")  # zero-shot: the pooled per-type statistics
    cart = transitions(cart_ds)
    torch.testing.assert_close(per_edge._type_stats("cartpole", cart.qpos)[1][hinge_edges(per_edge, "cartpole")[0]],
                               per_edge.target_norm["hinge"].std.to(cart.qpos))
    with pytest.raises(ConfigError, match="edge_target_stats is an option of the graph network"):
        ModelConfig(kind="mlp", edge_target_stats=True).validate()


def test_a_system_added_later_borrows_the_statistics_of_the_nearest_trained_system(cartpole_data, swimmer_data):
    """By default a system the model was not trained on is normalized, inputs and targets, exactly as
    the trained system nearest in structure (``KinematicTree.distance``): swimmer6 as swimmer4 in a
    model of cartpole and swimmer4, not with the pooled statistics; "pooled" or a trained system's
    name choose; a system of other joint types (acrobot: hinges only) falls back to pooled; an
    unknown name is a one-line error naming the trained systems; trained systems keep their own."""
    from envs.systems import get_system
    from gndesign.simulator import SystemSpec

    cart_ds, swim_ds = (TrajectoryDataset.load(p) for p in (cartpole_data, swimmer_data))
    cart, swim = (transitions(ds) for ds in (cart_ds, swim_ds))
    model = build_model(SMALL, [system_spec(cart_ds), system_spec(swim_ds)]).double()
    for b in (cart, swim):
        model.accumulate_statistics(b)

    def spec(name):
        s = get_system(name)
        return SystemSpec(name, s.mjcf, s.control_timestep, s.assets)

    def same(a, b):
        sa, sb = (model.input_stats(n, swim.qpos) for n in (a, b))
        ta, tb = (model._type_stats(n, swim.qpos)[1][-1] for n in (a, b))  # the last edge: a hinge in both
        return all(torch.equal(sa[k][i], sb[k][i]) for k in sa for i in (0, 1)) and torch.equal(ta, tb)

    model.add_system(spec("swimmer6"))
    assert model.statistics_source("swimmer6") == "swimmer4" and same("swimmer6", "swimmer4")
    assert not same("swimmer6", "cartpole")
    pooled_hinge = model.target_norm["hinge"].std.to(swim.qpos)
    assert not torch.equal(model._type_stats("swimmer6", swim.qpos)[1][-1], pooled_hinge)
    model.add_system(spec("swimmer6"), "pooled")
    assert model.statistics_source("swimmer6") is None
    torch.testing.assert_close(model._type_stats("swimmer6", swim.qpos)[1][-1], pooled_hinge)
    torch.testing.assert_close(model.input_stats("swimmer6", swim.qpos)["edge"][1], model.edge_norm.std)
    model.add_system(spec("swimmer6"), "cartpole")
    assert model.statistics_source("swimmer6") == "cartpole" and same("swimmer6", "cartpole")
    model.add_system(spec("acrobot"))
    assert model.statistics_source("acrobot") is None
    with pytest.raises(ConfigError, match="statistics of 'cheetah': the model was trained on cartpole, swimmer4"):
        model.add_system(spec("swimmer6"), "cheetah")
    model.add_system(system_spec(cart_ds), "swimmer4")  # a trained system keeps its own
    assert model.statistics_source("cartpole") == "cartpole"
