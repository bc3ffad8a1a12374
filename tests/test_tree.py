"""Graph sizes and edge lists per system; actuator mapping; clear errors for unsupported models."""

import mujoco
import numpy as np
import pytest
from conftest import ALL_JOINTS_XML

from envs.systems import get_system
from gndesign.errors import ModelError
from gndesign.tree import KinematicTree, load_mjmodel

# name: (nodes, forward edges as (parent, child, type))
EXPECTED = {
    "pendulum": (2, [(0, 1, "hinge")]),
    "cartpole": (3, [(0, 1, "slide"), (1, 2, "hinge")]),
    "acrobot": (3, [(0, 1, "hinge"), (1, 2, "hinge")]),
    "swimmer3": (4, [(0, 1, "slide"), (0, 1, "slide"), (0, 1, "hinge"), (1, 2, "hinge"), (2, 3, "hinge")]),
    "cheetah": (8, [(0, 1, "slide"), (0, 1, "slide"), (0, 1, "hinge"), (1, 2, "hinge"), (2, 3, "hinge"),
                    (3, 4, "hinge"), (1, 5, "hinge"), (5, 6, "hinge"), (6, 7, "hinge")]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_graph_sizes_and_edge_lists(name):
    tree = KinematicTree.from_model(get_system(name).model, name)
    nodes, edges = EXPECTED[name]
    assert tree.nbody == nodes
    got = list(zip(tree.edge_parent.tolist(), tree.edge_child.tolist(), tree.edge_type, strict=True))
    assert got == edges
    ei = tree.edge_index()
    assert ei.shape == (2, 2 * len(edges))
    assert (ei[:, len(edges):] == ei[::-1, : len(edges)]).all()  # reverses follow the forward edges


def test_swimmer_graph_grows_with_links():
    for n in (3, 6, 10):
        tree = KinematicTree.from_model(get_system(f"swimmer{n}").model)
        assert tree.nbody == n + 1
        assert tree.num_edges == n + 2  # two root slides, a root hinge and n-1 link hinges


def test_all_joint_types_and_weld_edges():
    tree = KinematicTree.from_model(ALL_JOINTS_XML)
    assert tree.edge_type == ["free", "ball", "hinge", "slide", "hinge", "weld"]
    # The three joints of body c give three parallel edges b -> c.
    assert tree.edge_parent.tolist() == [0, 1, 2, 2, 2, 3]
    assert tree.edge_child.tolist() == [1, 2, 3, 3, 3, 4]
    dofs = tree.edge_dofs()
    assert dofs[0].tolist() == [0, 1, 2, 3, 4, 5]  # free: 6 dofs
    assert dofs[1].tolist() == [6, 7, 8, -1, -1, -1]  # ball: 3 dofs
    assert (dofs[5] == -1).all()  # weld: none


def test_actuator_moments_joint_and_ball():
    tree = KinematicTree.from_model(ALL_JOINTS_XML)
    import torch

    gear = torch.as_tensor(tree.nominal_params()["actuator_gear"])[None]
    moment = tree.actuator_moment(gear)[0].numpy()
    assert moment.shape == (2, tree.nv)
    assert moment[0, 9] == 3.0 and np.count_nonzero(moment[0]) == 1  # h1 is dof 9
    assert moment[1, 6:9].tolist() == [1.0, 2.0, 3.0]


FIXED_TENDON = """
<mujoco><worldbody><body><joint name="a" axis="0 0 1"/><geom size=".1"/>
  <body pos="0 .3 0"><joint name="b" axis="0 0 1"/><geom size=".1"/></body></body></worldbody>
  <tendon><fixed name="t"><joint joint="a" coef="0.5"/><joint joint="b" coef="-2"/></fixed></tendon>
  <actuator><motor tendon="t" gear="4"/></actuator></mujoco>"""


def test_fixed_tendon_maps_through_coefficients():
    tree = KinematicTree.from_model(FIXED_TENDON)
    assert np.allclose(tree.actuator_basis[0, 0], [0.5, -2.0])


SITE_ACTUATOR = """
<mujoco><worldbody><body><joint name="a"/><geom size=".1"/><site name="s"/></body></worldbody>
  <actuator><motor name="thruster" site="s" gear="1 0 0 0 0 0"/></actuator></mujoco>"""

SPATIAL_TENDON = """
<mujoco><worldbody><site name="s0"/>
  <body><joint name="a"/><geom size=".1"/><site name="s1" pos="0 .1 0"/></body></worldbody>
  <tendon><spatial name="rope"><site site="s0"/><site site="s1"/></spatial></tendon>
  <actuator><motor name="pull" tendon="rope"/></actuator></mujoco>"""


def test_unsupported_transmissions_name_the_actuator():
    with pytest.raises(ModelError, match="'thruster' uses a site transmission.*supported"):
        KinematicTree.from_model(SITE_ACTUATOR)
    with pytest.raises(ModelError, match="'pull' drives spatial tendon 'rope'"):
        KinematicTree.from_model(SPATIAL_TENDON)


def test_malformed_mjcf_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="cannot compile MJCF string") as e:
        load_mjmodel("<mujoco><worldbody><body><geom type='nonsense'/></body></worldbody></mujoco>")
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="not found"):
        load_mjmodel(str(tmp_path / "missing.xml"))


def test_signature_tells_systems_apart():
    a = KinematicTree.from_model(get_system("swimmer6").model)
    b = KinematicTree.from_model(get_system("swimmer7").model)
    assert a.signature_hash() != b.signature_hash()
    assert a.signature_hash() == KinematicTree.from_model(get_system("swimmer6").model).signature_hash()
    m = mujoco.MjModel.from_xml_string(ALL_JOINTS_XML)
    assert KinematicTree.from_model(m).nq == m.nq


def test_depth_counts_hops_from_the_world_to_the_farthest_body():
    xml = """<mujoco><worldbody>
      <body name="a"><joint type="hinge"/><geom size=".1"/>
        <body name="b"><joint type="hinge"/><geom size=".1"/>
          <body name="c"><geom size=".1"/></body></body>
        <body name="d"><joint type="slide"/><geom size=".1"/></body></body>
      <body name="e"><freejoint/><geom size=".1"/></body>
    </worldbody></mujoco>"""
    assert KinematicTree.from_model(xml, "branches").depth() == 3  # world-a-b-c (the weld counts as a hop)
    depths = {"pendulum": 1, "cartpole": 2, "cheetah": 4, "swimmer6": 6}
    assert {n: KinematicTree.from_model(get_system(n).model, n).depth() for n in depths} == depths


def test_structural_distance_ranks_trees_of_the_same_joint_types():
    """Depth and body-count differences added, the larger tree first on a tie, None across joint
    types: swimmer12 is nearest swimmer9, swimmer7 is as far from 6 as from 8 and takes 8."""
    tree = {n: KinematicTree.from_model(get_system(n).model, n)
            for n in ("swimmer6", "swimmer7", "swimmer8", "swimmer9", "swimmer12", "cheetah", "acrobot", "cartpole")}
    assert tree["swimmer12"].distance(tree["swimmer9"]) == (6, -10)
    assert tree["swimmer12"].distance(tree["cheetah"]) == (13, -8)
    assert tree["swimmer7"].distance(tree["swimmer6"]) == (2, -7)
    assert tree["swimmer7"].distance(tree["swimmer8"]) == (2, -9)
    assert tree["swimmer9"].distance(tree["swimmer9"]) == (0, -10)
    assert tree["cartpole"].distance(tree["acrobot"]) is None and tree["acrobot"].distance(tree["cartpole"]) is None
