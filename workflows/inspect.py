"""What ``gndesign inspect`` shows: a system's graph (nodes, edges, actuators, features) and,
optionally, torch forward kinematics checked against MuJoCo."""

from __future__ import annotations

from envs.systems import get_system
from gndesign.fkcheck import check_forward_kinematics
from gndesign.graphs import GraphBuilder
from gndesign.tree import NV, KinematicTree


def inspect_system(name: str, check_fk: bool = False, num_states: int = 64) -> dict:
    """Everything ``gndesign inspect`` shows, as a JSON-ready dict (``fk_errors`` with ``check_fk``)."""
    system = get_system(name)
    tree = KinematicTree.from_model(system.model, system.name)
    nominal = tree.nominal_params()
    moment = tree.actuator_basis * nominal["actuator_gear"][:, :, None]
    info = {
        "system": system.name,
        "control_timestep": system.control_timestep,
        "n_substeps": system.n_substeps,
        "nq": tree.nq, "nv": tree.nv, "nu": tree.nu,
        "nodes": [{"index": i, "body": tree.body_names[i], "parent": int(tree.body_parent[i]),
                   "mass": float(nominal["body_mass"][i])} for i in range(tree.nbody)],
        "edges": [{"index": e, "parent": tree.body_names[tree.edge_parent[e]],
                   "child": tree.body_names[tree.edge_child[e]], "type": tree.edge_type[e],
                   "joint": tree.joint_names[tree.edge_joint[e]] if tree.edge_joint[e] >= 0 else None}
                  for e in range(tree.num_edges)],
        "actuators": [{"name": tree.actuator_names[a],
                       "joints": [tree.joint_names[j] for j in range(tree.njnt)
                                  if abs(moment[a][:, _joint_dofs(tree, j)]).sum() > 0],
                       "moment": [round(float(x), 6) for x in moment[a].sum(0)],
                       "ctrlrange": [float(x) for x in tree.ctrlrange[a]]} for a in range(tree.nu)],
        "feature_sizes": GraphBuilder.feature_sizes(),
        "graph": {"nodes": tree.nbody, "edges_directed": 2 * tree.num_edges},
    }
    if check_fk:
        info["fk_errors"] = check_forward_kinematics(system.model, tree, num_states=num_states)
    return info


def _joint_dofs(tree, j: int) -> slice:
    a = int(tree.jnt_dofadr[j])
    return slice(a, a + NV[tree.jnt_type[j]])
