"""State -> graph conversion: shapes, batching, invariances, differentiability."""

import numpy as np
import pytest
import torch
from conftest import ALL_JOINTS_XML

from envs.systems import get_system
from gndesign.fkcheck import random_states
from gndesign.graphs import GraphBuilder, concat_batches
from gndesign.tree import MAX_DOF, KinematicTree


def builder(name):
    system = get_system(name)
    return GraphBuilder(KinematicTree.from_model(system.model, name), system.control_timestep), system


def states(system, n, seed=0, dtype=torch.float64):
    q, v = random_states(system.model, np.random.default_rng(seed), n)
    return torch.tensor(q, dtype=dtype), torch.tensor(v, dtype=dtype)


@pytest.mark.parametrize("name", ["cartpole", "swimmer6", "cheetah"])
def test_shapes_and_feature_sizes(name):
    gb, system = builder(name)
    q, v = states(system, 5)
    g = gb.build(q, v, torch.rand(5, system.model.nu, dtype=torch.float64))
    sizes = GraphBuilder.feature_sizes()
    t = gb.tree
    assert g.num_graphs == 5
    assert g.x.shape == (5 * t.nbody, sizes["node"])
    assert g.edge_attr.shape == (5 * 2 * t.num_edges, sizes["edge"])
    assert g.u.shape == (5, sizes["global"])
    assert g.edge_index.max() == 5 * t.nbody - 1
    assert torch.equal(g.batch, torch.arange(5).repeat_interleave(t.nbody))
    assert torch.isfinite(g.x).all() and torch.isfinite(g.edge_attr).all()


def test_one_state_equals_its_row_in_a_batch():
    gb, system = builder("cheetah")
    q, v = states(system, 7)
    a = torch.rand(7, system.model.nu, dtype=torch.float64)
    big = gb.build(q, v, a)
    one = gb.build(q[3:4], v[3:4], a[3:4])
    n, e = gb.tree.nbody, 2 * gb.tree.num_edges
    assert torch.allclose(big.x[3 * n:4 * n], one.x)
    assert torch.allclose(big.edge_attr[3 * e:4 * e], one.edge_attr)


def test_translation_invariance_of_a_swimmer():
    """Sliding the swimmer's root (unlimited slides without springs) changes no feature at all."""
    gb, system = builder("swimmer6")
    q, v = states(system, 4)
    moved = q.clone()
    moved[:, :2] += torch.tensor([3.0, -2.0], dtype=q.dtype)
    g0, g1 = gb.build(q, v), gb.build(moved, v)
    assert torch.allclose(g0.x, g1.x) and torch.allclose(g0.edge_attr, g1.edge_attr)
    # ...while a limited slide (the cart's rail) keeps its coordinate.
    gc, cart = builder("cartpole")
    qc, vc = states(cart, 2)
    shifted = qc.clone()
    shifted[:, 0] += 0.5
    names = GraphBuilder.feature_names()["edge"]
    diff = (gc.build(qc, vc).edge_attr - gc.build(shifted, vc).edge_attr).abs()
    assert diff[:, names.index("q_0")].max() == pytest.approx(0.5)


def test_reverse_edges_flip_displacement_and_flag():
    gb, system = builder("acrobot")
    q, v = states(system, 1)
    g = gb.build(q, v)
    names = GraphBuilder.feature_names()["edge"]
    E = gb.tree.num_edges
    dx, rev = names.index("dx"), names.index("reverse")
    assert torch.allclose(g.edge_attr[:E, dx], -g.edge_attr[E:, dx])
    assert g.edge_attr[:E, rev].eq(0).all() and g.edge_attr[E:, rev].eq(1).all()


def test_parameters_change_static_features_and_get_gradients():
    gb, system = builder("cartpole")
    q, v = states(system, 3)
    params = gb.nominal_params(3, dtype=torch.float64)
    params["body_mass"] = params["body_mass"] * 1.1
    params["body_mass"].requires_grad_(True)
    params["actuator_gear"].requires_grad_(True)
    q.requires_grad_(True)
    a = torch.rand(3, 1, dtype=torch.float64, requires_grad=True)
    g = gb.build(q, v, a, params)
    names = GraphBuilder.feature_names()
    assert torch.allclose(g.x[1::3, names["node"].index("mass")], params["body_mass"][:, 1].detach())
    (g.x.pow(2).sum() + g.edge_attr.pow(2).sum()).backward()
    for t in (q, a, params["body_mass"], params["actuator_gear"]):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_dof_slot_mapping_is_invertible():
    tree = KinematicTree.from_model(ALL_JOINTS_XML)
    gb = GraphBuilder(tree, 0.01)
    acc = torch.randn(4, tree.nv)
    slots = gb.dofs_to_edges(acc)
    assert slots.shape == (4, tree.num_edges, 6)
    assert torch.equal(gb.edges_to_dofs(slots), acc)
    assert slots[:, -1].eq(0).all()  # the weld edge carries nothing


def test_mixed_systems_in_one_batch():
    (ga, sa), (gb_, sb) = builder("cartpole"), builder("swimmer6")
    a = ga.build(*states(sa, 2))
    b = gb_.build(*states(sb, 3))
    m = concat_batches([a, b])
    assert m.num_graphs == 5
    assert m.x.shape[0] == a.x.shape[0] + b.x.shape[0]
    assert m.edge_index[:, a.edge_index.shape[1]:].min() == a.x.shape[0]
    assert m.batch.max() == 4 and m.ptr.tolist()[-1] == m.x.shape[0]


def test_bad_parameter_shapes_are_refused():
    gb, system = builder("cartpole")
    q, v = states(system, 2)
    with pytest.raises(ValueError, match="body_mass"):
        gb.build(q, v, params={"body_mass": torch.ones(5)})
    with pytest.raises(KeyError, match="unknown parameter"):
        gb.build(q, v, params={"mass": torch.ones(3)})


def test_precomputed_static_graph_gives_the_same_graphs():
    gb, system = builder("cheetah")
    q, v = states(system, 4)
    a = torch.rand(4, system.model.nu, dtype=torch.float64)
    params = gb.nominal_params(4, dtype=torch.float64)
    params["body_mass"] = params["body_mass"] * 1.3
    static = gb.static_graph(params, 4, q)
    fresh, cached = gb.build_tensors(q, v, a, params), gb.build_tensors(q, v, a, static=static)
    for name in ("x", "edge_attr", "u", "edge_index", "batch"):
        assert torch.equal(getattr(fresh, name), getattr(cached, name)), name
    with pytest.raises(ValueError, match="static features are for 4 graphs"):
        gb.build_tensors(q[:2], v[:2], a[:2], static=static)


def test_limited_joints_say_how_far_they_are_past_their_range():
    """With ``limit_features`` a limited hinge or slide fills slots 3 and 4 of its coordinates with
    its distance past the lower and the upper end of its range (zero inside, zero for an unlimited
    joint); the other slots do not change, and without the flag the slots stay zero."""
    system = get_system("cartpole")  # the cart's slide is limited to [-1.8, 1.8], the pole's hinge is free
    tree = KinematicTree.from_model(system.model, "cartpole")
    on, off = (GraphBuilder(tree, system.control_timestep, flag) for flag in (True, False))
    q = torch.tensor([[0.5, 0.3], [2.0, 0.3], [-2.1, -0.2]], dtype=torch.float64)
    slide, hinge = tree.edge_type.index("slide"), tree.edge_type.index("hinge")
    with_limits, without = on.joint_coordinates(q), off.joint_coordinates(q)
    expected = torch.tensor([[0.0, 0.0], [0.0, 0.2], [0.3, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(with_limits[:, slide, 3:5], expected)
    v = torch.tensor([[-140.0, 0.0], [-10.0, 1.0], [40.0, 0.0]], dtype=torch.float64)  # dt 0.01 s: -1.4, -0.1, 0.4 m
    ahead = on.joint_coordinates(q, v)[:, slide]
    torch.testing.assert_close(ahead[:, 3:5], expected)  # now
    torch.testing.assert_close(ahead[:, 5:7], torch.tensor([[0.0, 0.0], [0.0, 0.1], [0.0, 0.0]], dtype=torch.float64))
    assert on.control_timestep == 0.01
    torch.testing.assert_close(with_limits[:, slide, 5:7], expected)  # without velocities: as now
    assert not with_limits[:, hinge, 3:].any() and not without[..., 3:].any()
    torch.testing.assert_close(with_limits[..., :3], without[..., :3])


def test_periodic_hinges_leave_out_the_angle_of_free_hinges_only():
    """With ``periodic_hinges`` the angle slot of a hinge without limit or spring is zero (its sine
    and cosine stay); a limited hinge keeps its angle, and without the flag every hinge does."""
    system = get_system("swimmer6")  # a free-floating root (slides and a hinge) and limited joint hinges
    tree = KinematicTree.from_model(system.model, "swimmer6")
    on, off = (GraphBuilder(tree, system.control_timestep, periodic_hinges=flag) for flag in (True, False))
    gen = torch.Generator().manual_seed(0)
    q = torch.as_tensor(tree.qpos0) + torch.randn(3, tree.nq, generator=gen, dtype=torch.float64)
    with_flag, without = on.joint_coordinates(q), off.joint_coordinates(q)
    free = [e for e, (j, et) in enumerate(zip(tree.edge_joint, tree.edge_type, strict=True))
            if et == "hinge" and not tree.jnt_limited[j] and tree.jnt_stiffness[j] == 0]
    limited = [e for e, (j, et) in enumerate(zip(tree.edge_joint, tree.edge_type, strict=True))
               if et == "hinge" and tree.jnt_limited[j]]
    assert len(free) == 1 and len(limited) == 5  # the root's yaw; the five joints between links
    assert not with_flag[:, free, 0].any() and without[:, free, 0].abs().min() > 0
    torch.testing.assert_close(with_flag[:, limited], without[:, limited])
    torch.testing.assert_close(with_flag[..., 1:], without[..., 1:])
    yaw = tree.edge_joint[free[0]]
    assert on.coordinate_scale(yaw) == 0.0 and off.coordinate_scale(yaw) == 1.0
    slides = [j for j, et in zip(tree.edge_joint, tree.edge_type, strict=True) if et == "slide"]
    assert [(on.coordinate_scale(j), off.coordinate_scale(j)) for j in slides] == [(0.0, 0.0)] * 2  # as before


TWO_LINKS_XML = """
<mujoco>
  <option gravity="0 0 -9.81"/>
  <worldbody>
    <body name="upper" pos="0 0 2">
      <joint name="shoulder" type="hinge" axis="0 1 0" damping="0.1"/>
      <geom type="capsule" fromto="0 0 0 0 0 -1" size="0.05" mass="1"/>
      <body name="lower" pos="0 0 -1">
        <joint name="elbow" type="hinge" axis="0 1 0"/>
        <geom type="capsule" fromto="0 0 0 0 0 -1" size="0.05" mass="3"/>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="elbow" gear="2"/></actuator>
</mujoco>
"""


def test_features_of_a_two_link_arm_equal_hand_computed_values():
    """A double pendulum swinging about y: every dynamic feature (and the static ones a hand can
    compute) against closed-form forward kinematics, for one state."""
    tree = KinematicTree.from_model(TWO_LINKS_XML)
    gb = GraphBuilder(tree, 0.05)
    q1, q2, v1, v2, a = 0.3, -0.7, 1.1, -0.4, 0.5
    g = gb.build(torch.tensor([[q1, q2]], dtype=torch.float64), torch.tensor([[v1, v2]], dtype=torch.float64),
                 torch.tensor([[a]], dtype=torch.float64))
    names = GraphBuilder.feature_names()
    node = {k: g.x[:, names["node"].index(k)] for k in names["node"]}
    edge = {k: g.edge_attr[:, names["edge"].index(k)] for k in names["edge"]}
    s1, c1, s12, c12 = np.sin(q1), np.cos(q1), np.sin(q1 + q2), np.cos(q1 + q2)

    def close(got, want):
        assert torch.allclose(got, torch.tensor(want, dtype=got.dtype), atol=1e-12), (got, want)

    # Nodes: world, upper (its origin is the fixed shoulder at z = 2), lower (one link below it).
    close(node["mass"], [0.0, 1.0, 3.0])
    close(node["com_z"], [0.0, -0.5, -0.5])
    close(node["is_world"], [1.0, 0.0, 0.0])
    close(node["rel_x"], [0.0, 0.0, -s1])  # relative to the root body (the upper link)
    close(node["rel_y"], [0.0, 0.0, 0.0])
    close(node["rel_z"], [0.0, 0.0, -c1])
    close(node["height"], [0.0, 2.0, 2.0 - c1])
    # Rotations about y: first column (cos, 0, -sin), second (0, 1, 0).
    close(node["R_xx"], [1.0, c1, c12])
    close(node["R_zx"], [0.0, -s1, -s12])
    close(node["R_yy"], [1.0, 1.0, 1.0])
    close(node["R_xy"], [0.0, 0.0, 0.0])
    # Velocities of the body frame origins (world frame): the lower origin moves on a circle.
    close(node["vel_x"], [0.0, 0.0, -v1 * c1])
    close(node["vel_z"], [0.0, 0.0, v1 * s1])
    close(node["angvel_y"], [0.0, v1, v1 + v2])
    for k in ("R_yx", "R_zy", "vel_y", "angvel_x", "angvel_z"):  # nothing leaves the x-z plane
        close(node[k], [0.0, 0.0, 0.0])
    # Edges: shoulder (world -> upper), elbow (upper -> lower), then the same two reversed.
    assert g.edge_index.tolist() == [[0, 1, 1, 2], [1, 2, 0, 1]]
    close(edge["reverse"], [0.0, 0.0, 1.0, 1.0])
    close(edge["dx"], [0.0, -s1, 0.0, s1])  # edges leaving the fixed world carry no displacement
    close(edge["dz"], [0.0, -c1, 0.0, c1])
    close(edge["dist"], [0.0, 1.0, 0.0, 1.0])
    close(edge["q_0"], [q1, q2, q1, q2])
    close(edge["q_1"], np.sin([q1, q2, q1, q2]))
    close(edge["q_2"], np.cos([q1, q2, q1, q2]))
    close(edge["qvel_0"], [v1, v2, v1, v2])
    close(edge["force_0"], [0.0, 2 * a, 0.0, 2 * a])  # gear 2 on the elbow only
    close(edge["gear_0"], [0.0, 2.0, 0.0, 2.0])
    close(edge["type_hinge"], [1.0, 1.0, 1.0, 1.0])
    close(edge["axis_y"], [1.0, 1.0, 1.0, 1.0])
    close(edge["anchor_z"], [2.0, -1.0, 2.0, -1.0])  # each joint in its parent's frame
    close(edge["damping"], [0.1, 0.0, 0.1, 0.0])
    unused = ["dy"] + [f"q_{k}" for k in range(3, 7)] + [f"{f}_{k}" for f in ("qvel", "force")
                                                         for k in range(1, MAX_DOF)]
    for k in unused:  # one dof per hinge: its other slots stay zero
        close(edge[k], [0.0] * 4)
    close(g.u[0], [0.05, 0.0, 0.0, -9.81])
