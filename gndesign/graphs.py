"""States of articulated systems as graphs.

:class:`GraphBuilder` turns a batch of states, actions and physical parameters of one system into
node, edge and global feature tensors, packed as a :class:`gndesign.nn.Graph` (or a PyG ``Batch``:
:meth:`GraphBuilder.build`, :func:`to_pyg`). The same code path serves one state or thousands, and
everything is differentiable with respect to states, actions and parameters.

Features (``[static | dynamic]``; see :meth:`GraphBuilder.feature_names` for every column):

* nodes (bodies): mass, inertia tensor in the body frame (6 entries), centre of mass in the body
  frame, a world-body flag | position relative to the root body (zero for the fixed world body,
  so features are translation invariant), height
  against gravity, orientation (first two rotation-matrix columns), linear and angular velocity.
* edges (joints, both directions): joint-type one-hot, axis and anchor in the parent frame,
  damping, stiffness, armature, friction loss, range, actuator strength per dof slot, control
  range | displacement receiver - sender and its length (zero on edges from the fixed world body),
  joint coordinates relative to ``qpos0`` (hinge: angle, sin, cos, the angle left out with
  ``periodic_hinges`` for hinges without limit or spring; slide: offset, left out for slides
  without limit or spring, which cannot change the dynamics; ball/free: quaternion; a limited
  hinge or slide, with ``limit_features``: how far it is past the lower and the upper end of its
  range, now and after a step at its current velocity), joint velocities and the generalized
  actuator force per dof slot (``MAX_DOF`` slots, zero padded), and a direction flag.
* globals: control timestep and gravity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch_geometric.data import Batch

from gndesign.datasets.params import PARAM_KEYS
from gndesign.kinematics import forward_kinematics
from gndesign.nn import Graph
from gndesign.quaternions import quat_to_mat
from gndesign.tree import EDGE_TYPES, FREE, HINGE, MAX_DOF, NV, SLIDE, KinematicTree

Params = Mapping[str, torch.Tensor]

NODE_STATIC = ["mass", "I_xx", "I_yy", "I_zz", "I_xy", "I_xz", "I_yz", "com_x", "com_y", "com_z",
               "is_world"]
NODE_DYNAMIC = ["rel_x", "rel_y", "rel_z", "height", "R_xx", "R_yx", "R_zx", "R_xy", "R_yy", "R_zy",
                "vel_x", "vel_y", "vel_z", "angvel_x", "angvel_y", "angvel_z"]
EDGE_STATIC = ([f"type_{t}" for t in EDGE_TYPES]
               + ["axis_x", "axis_y", "axis_z", "anchor_x", "anchor_y", "anchor_z", "damping",
                  "stiffness", "armature", "frictionloss", "limited", "range_lo", "range_hi"]
               + [f"gear_{k}" for k in range(MAX_DOF)] + ["ctrl_lo", "ctrl_hi"])
_COORD_WIDTH = 7
EDGE_DYNAMIC = (["dx", "dy", "dz", "dist"] + [f"q_{k}" for k in range(_COORD_WIDTH)]
                + [f"qvel_{k}" for k in range(MAX_DOF)] + [f"force_{k}" for k in range(MAX_DOF)]
                + ["reverse"])
GLOBAL = ["dt", "gravity_x", "gravity_y", "gravity_z"]


def _np_quat_to_mat(q: np.ndarray) -> np.ndarray:
    return quat_to_mat(torch.from_numpy(np.asarray(q, dtype=np.float64))).numpy()


class GraphBuilder:
    """Builds PyG graphs for batches of states of one system.

    Args:
        tree: the system's kinematic tree.
        control_timestep: the time between consecutive states (a global feature).
    """

    def __init__(self, tree: KinematicTree, control_timestep: float, limit_features: bool = False,
                 periodic_hinges: bool = False):
        self.tree = tree
        self.control_timestep = float(control_timestep)
        self.limit_features = limit_features
        self.periodic_hinges = periodic_hinges
        E = tree.num_edges
        self.edge_index = torch.as_tensor(tree.edge_index())  # [2, 2E]
        self.edge_dofs = torch.as_tensor(tree.edge_dofs())  # [E, MAX_DOF]
        self._constant_edge = torch.as_tensor(self._constant_edge_features())  # [E, ...]
        self._ctrlrange = torch.as_tensor(self._edge_ctrlrange())  # [E, 2]
        self._consts: dict = {}
        # Per-edge index lists used to gather joint quantities into dof slots.
        self._dof_mask = self.edge_dofs >= 0
        self._dof_gather = self.edge_dofs.clamp_min(0)
        self._num_edges = E

    # --------------------------------------------------------------------------- sizes/names
    @staticmethod
    def feature_names() -> dict[str, list[str]]:
        return {"node": NODE_STATIC + NODE_DYNAMIC, "edge": EDGE_STATIC + EDGE_DYNAMIC,
                "global": GLOBAL}

    @classmethod
    def feature_sizes(cls) -> dict[str, int]:
        """Feature widths, identical for every system (so one model serves many)."""
        return {k: len(v) for k, v in cls.feature_names().items()}

    # --------------------------------------------------------------------------- parameters
    def nominal_params(self, batch: int = 1, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """The model's own parameters broadcast to ``[batch, ...]``."""
        return {k: torch.as_tensor(v, dtype=dtype).expand((batch,) + v.shape).clone()
                for k, v in self.tree.nominal_params().items()}

    def resolve_params(self, params: Params | None, batch: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        nominal = self.tree.nominal
        if params is None:
            params = {}
        unknown = set(params) - set(PARAM_KEYS)
        if unknown:
            raise KeyError(f"unknown parameter(s) {sorted(unknown)}; expected some of {PARAM_KEYS}")
        out = {}
        for k in PARAM_KEYS:
            v = params.get(k)
            v = self.const(k, like) if v is None else torch.as_tensor(v, dtype=like.dtype, device=like.device)
            if v.shape == nominal[k].shape:
                v = v.expand((batch,) + v.shape)
            if v.shape != (batch,) + nominal[k].shape:
                raise ValueError(f"parameter {k} must be {list(nominal[k].shape)} or "
                                 f"[{batch}, {', '.join(map(str, nominal[k].shape))}], got {list(v.shape)}")
            out[k] = v
        return out

    # --------------------------------------------------------------------------- static features
    def _constant_edge_features(self) -> np.ndarray:
        """Edge features that no randomized parameter changes: ``[E, ...]``."""
        t = self.tree
        rows = []
        for e, (j, et) in enumerate(zip(t.edge_joint, t.edge_type, strict=True)):
            child = int(t.edge_child[e])
            onehot = [float(et == name) for name in EDGE_TYPES]
            R = _np_quat_to_mat(t.body_quat[child])
            if j < 0:
                axis, anchor = np.zeros(3), t.body_pos[child]
                stiff = arm = fric = limited = 0.0
                rng = np.zeros(2)
            else:
                dofs = slice(int(t.jnt_dofadr[j]), int(t.jnt_dofadr[j]) + NV[et])
                axis = R @ t.jnt_axis[j] if et in (HINGE, SLIDE) else np.zeros(3)
                anchor = t.body_pos[child] + R @ t.jnt_pos[j]
                stiff = float(t.jnt_stiffness[j])
                arm = float(t.dof_armature[dofs].mean())
                fric = float(t.dof_frictionloss[dofs].mean())
                limited = float(t.jnt_limited[j])
                rng = t.jnt_range[j] if (limited and et in (HINGE, SLIDE)) else np.zeros(2)
            rows.append(np.concatenate([onehot, axis, anchor, [stiff, arm, fric, limited], rng]))
        return np.asarray(rows, dtype=np.float64).reshape(self.tree.num_edges, -1)

    def static_node_features(self, params: Params) -> torch.Tensor:
        """``[B, nbody, len(NODE_STATIC)]`` from batched parameters."""
        mass = params["body_mass"]
        B, N = mass.shape
        like = mass
        # Principal inertia rotated into the body frame: R diag(I) R^T, 6 unique entries.
        R = self.const("iquat_mat", like)
        full = torch.einsum("nij,bnj,nkj->bnik", R, params["body_inertia"], R)
        inertia = torch.stack([full[..., 0, 0], full[..., 1, 1], full[..., 2, 2],
                               full[..., 0, 1], full[..., 0, 2], full[..., 1, 2]], dim=-1)
        com = self.const("body_ipos", like).expand(B, N, 3)
        is_world = torch.zeros(B, N, 1, dtype=like.dtype, device=like.device)
        is_world[:, 0] = 1.0
        return torch.cat([mass[..., None], inertia, com, is_world], dim=-1)

    def _dof_slots(self, per_dof: torch.Tensor) -> torch.Tensor:
        """Gather ``[B, nv]`` per-dof values into per-edge slots ``[B, E, MAX_DOF]`` (zero padded)."""
        mask = self.const("dof_mask", per_dof)
        out = per_dof[:, self.const("dof_gather", per_dof)]
        return torch.where(mask, out, torch.zeros_like(out))

    def dofs_to_edges(self, per_dof: torch.Tensor) -> torch.Tensor:
        """``[B, nv] -> [B, E, MAX_DOF]``: e.g. accelerations as per-edge targets."""
        return self._dof_slots(per_dof)

    def edges_to_dofs(self, per_edge: torch.Tensor) -> torch.Tensor:
        """``[B, E, MAX_DOF] -> [B, nv]``, the exact inverse of :meth:`dofs_to_edges` (weld edges and
        unused slots are dropped). ``per_edge`` holds the forward edges only."""
        B = per_edge.shape[0]
        mask = self._dof_mask.to(per_edge.device)
        src = per_edge[:, mask]  # [B, nv] in edge order
        idx = self.edge_dofs.to(per_edge.device)[mask]
        return per_edge.new_zeros(B, self.tree.nv).index_copy(1, idx, src)

    def static_edge_features(self, params: Params) -> torch.Tensor:
        """``[B, E, len(EDGE_STATIC)]`` for the forward edges."""
        like = params["dof_damping"]
        B = like.shape[0]
        const = self.const("constant_edge", like).expand(B, -1, -1)
        n_type = len(EDGE_TYPES)
        mask = self.const("dof_mask", like)
        damping = self._dof_slots(params["dof_damping"]).sum(-1) / mask.sum(-1).clamp_min(1)
        gain = self.const("actuator_gain", like)
        moment = self.tree.actuator_moment(params["actuator_gear"]) * gain[:, None]  # [B, nu, nv]
        strength = self._dof_slots(moment.abs().sum(1))  # [B, E, MAX_DOF]
        ctrl = self.const("ctrlrange", like)[None]
        return torch.cat([const[..., : n_type + 6], damping[..., None], const[..., n_type + 6:],
                          strength, ctrl.expand(B, -1, -1)], dim=-1)

    def const(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A cached constant tensor (tree arrays, constant features) in ``like``'s dtype and device."""
        key = (name, like.dtype, like.device)
        if key not in self._consts:
            t = self.tree
            src = {"constant_edge": self._constant_edge, "ctrlrange": self._ctrlrange,
                   "body_ipos": t.body_ipos, "iquat_mat": _np_quat_to_mat(t.body_iquat), "gravity": t.gravity,
                   "qpos0": t.qpos0, "actuator_gain": t.actuator_gain, "edge_dofs": self.edge_dofs,
                   "dof_mask": self._dof_mask, "dof_gather": self._dof_gather, "edge_index": self.edge_index,
                   "edge_type_index": np.array([EDGE_TYPES.index(e) for e in t.edge_type]),
                   **t.nominal}[name]
            src = torch.as_tensor(src)
            self._consts[key] = src.to(device=like.device, dtype=like.dtype if src.is_floating_point() else None)
        return self._consts[key]

    def _edge_ctrlrange(self) -> np.ndarray:
        """``[E, 2]`` the widest finite control range among actuators reaching each edge."""
        t = self.tree
        out = np.zeros((t.num_edges, 2))
        reach = np.abs(t.actuator_basis).sum(1) > 0  # [nu, nv]
        for e in range(t.num_edges):
            dofs = self.edge_dofs[e][self.edge_dofs[e] >= 0].numpy()
            acts = np.nonzero(reach[:, dofs].any(1))[0] if len(dofs) else []
            lo = [t.ctrlrange[a, 0] for a in acts if np.isfinite(t.ctrlrange[a, 0])]
            hi = [t.ctrlrange[a, 1] for a in acts if np.isfinite(t.ctrlrange[a, 1])]
            out[e] = [min(lo, default=0.0), max(hi, default=0.0)]
        return out

    # --------------------------------------------------------------------------- dynamic features
    def coordinate_scale(self, j: int) -> float:
        """1, or 0 where the first coordinate slot of hinge or slide ``j`` is left out. Without limit or
        spring, a slide cannot change the dynamics (leaving its offset out makes e.g. a swimmer's or a
        cheetah's model translation invariant), and a hinge moves the system only through the sine and
        cosine of its angle: with ``periodic_hinges`` its angle (which grows without bound as a link
        spins: acrobot's elbow reaches 22 rad in 200 steps and 84 in 1,000) is left out too."""
        t = self.tree
        free = not t.jnt_limited[j] and t.jnt_stiffness[j] == 0
        return 0.0 if free and (t.jnt_type[j] == SLIDE or self.periodic_hinges) else 1.0

    def joint_coordinates(self, qpos: torch.Tensor, qvel: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, E, 7]`` joint coordinates per forward edge, relative to ``qpos0`` (zeros for welds)."""
        t = self.tree
        B = qpos.shape[0]
        zeros = qpos.new_zeros(B, _COORD_WIDTH)
        cols = []
        q0 = self.const("qpos0", qpos)
        for j, et in zip(t.edge_joint, t.edge_type, strict=True):
            if j < 0:
                cols.append(zeros)
                continue
            a = int(t.jnt_qposadr[j])
            if et == HINGE:
                ang = qpos[:, a] - q0[a]
                c = torch.stack([ang * self.coordinate_scale(j), torch.sin(ang), torch.cos(ang)], -1)
            elif et == SLIDE:
                c = F.pad((qpos[:, a] - q0[a])[:, None] * self.coordinate_scale(j), (0, 2))
            else:  # ball or free: the orientation quaternion (a free joint's position is left out
                # for translation invariance; node features carry it relative to the root)
                c = torch.cat([qpos.new_zeros(B, 3), qpos[:, a + (3 if et == FREE else 0):][:, :4]], -1)
            if self.limit_features and et in (HINGE, SLIDE) and t.jnt_limited[j]:
                # slots 3-6: how far past the lower and the upper end, now and after a step at the
                # current velocity (a limit hit within the step: the largest one-step errors)
                lo, hi = (float(x) for x in t.jnt_range[j])
                q = qpos[:, a:a + 1]
                ahead = q if qvel is None else q + self.control_timestep * qvel[:, int(t.jnt_dofadr[j])][:, None]
                c = torch.cat([c, F.relu(lo - q), F.relu(q - hi), F.relu(lo - ahead), F.relu(ahead - hi)], -1)
            cols.append(torch.cat([c, qpos.new_zeros(B, _COORD_WIDTH - c.shape[1])], -1))
        return torch.stack(cols, dim=1)

    def build(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor | None = None,
              params: Params | None = None) -> Batch:
        """Graphs for a batch of states as a PyG ``Batch`` (see :meth:`build_tensors`)."""
        return to_pyg(self.build_tensors(qpos, qvel, action, params))

    def build_tensors(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor | None = None,
                      params: Params | None = None, static: StaticGraph | None = None) -> Graph:
        """Graphs for a batch of states.

        Args:
            qpos: ``[B, nq]``; qvel: ``[B, nv]``; action: ``[B, nu]`` (zeros if None);
            params: optional physical parameters, each ``[B, ...]`` or unbatched (nominal if None).
            static: the output of :meth:`static_graph` for these parameters (then ``params`` is
                ignored); rollouts compute it once.

        Returns:
            a :class:`gndesign.nn.Graph` with ``x [B*nbody, F_node]``, ``edge_index [2, B*2E]``,
            ``edge_attr [B*2E, F_edge]``, ``u [B, F_global]`` and ``batch [B*nbody]``.
        """
        t = self.tree
        if qpos.dim() == 1:
            raise ValueError("qpos must be batched: [batch, nq] (use qpos[None] for one state)")
        B = qpos.shape[0]
        if action is None:
            action = qpos.new_zeros(B, t.nu)
        if action.shape != (B, t.nu):
            raise ValueError(f"action must be [{B}, {t.nu}], got {list(action.shape)}")
        if static is None:
            static = self.static_graph(params, B, qpos)
        elif static.num_graphs != B:
            raise ValueError(f"static features are for {static.num_graphs} graphs, the states for {B}")
        p = static.params
        kin = forward_kinematics(t, qpos, qvel)

        # Nodes.
        root = kin.xpos[:, 1:2] if t.nbody > 1 else kin.xpos[:, :1]
        g = self.const("gravity", qpos)
        gn = float(np.linalg.norm(t.gravity))
        up = -g / gn if gn > 0 else g.new_tensor([0.0, 0.0, 1.0])
        height = (kin.xpos * up).sum(-1, keepdim=True)
        rot6 = kin.xmat[..., :, :2].transpose(-1, -2).reshape(B, t.nbody, 6)
        rel = kin.xpos - root
        rel = torch.cat([torch.zeros_like(rel[:, :1]), rel[:, 1:]], dim=1)  # the world node is fixed
        x = torch.cat([static.node, rel, height, rot6, kin.linvel, kin.angvel], dim=-1)

        # Edges: forward then reverse.
        ei = self.const("edge_index", qpos)
        E = self._num_edges
        disp = kin.xpos[:, ei[1, :E]] - kin.xpos[:, ei[0, :E]]
        # Edges from the fixed world frame would carry absolute positions; their joint
        # coordinates already say where the child is, so they get no displacement.
        disp = disp * (ei[0, :E] != 0).to(disp.dtype)[:, None]
        dist = disp.norm(dim=-1, keepdim=True)
        force = t.generalized_actuation(action, p["actuator_gear"])
        joint = torch.cat([self.joint_coordinates(qpos, qvel), self._dof_slots(qvel), self._dof_slots(force)], -1)
        ones = qpos.new_ones(B, E, 1)
        fwd = torch.cat([static.edge, disp, dist, joint, 0 * ones], -1)
        rev = torch.cat([static.edge, -disp, dist, joint, ones], -1)
        edge_attr = torch.cat([fwd, rev], dim=1)
        return Graph(x.reshape(B * t.nbody, -1), edge_attr.reshape(-1, edge_attr.shape[-1]), static.u,
                            static.edge_index, static.batch, B)

    def static_graph(self, params: Params | None, batch: int, like: torch.Tensor) -> StaticGraph:
        """What does not change along a rollout of ``batch`` graphs with parameters ``params``
        (nominal if None): static node and edge features, globals and the batched topology.
        Pass it to :meth:`build_tensors` to skip recomputing them every step."""
        p = self.resolve_params(params, batch, like)
        g = self.const("gravity", like)
        u = torch.cat([like.new_full((batch, 1), self.control_timestep), g.expand(batch, 3)], -1)
        ei, graph_of = batched_topology(self.const("edge_index", like), batch, self.tree.nbody)
        return StaticGraph(p, self.static_node_features(p), self.static_edge_features(p), u, ei, graph_of, batch)


@dataclass
class StaticGraph:
    """The per-rollout constants of ``num_graphs`` graphs: resolved ``params``, static node features
    ``node [B, nbody, F]`` and forward-edge features ``edge [B, E, F]``, globals ``u [B, F_global]``,
    the batched ``edge_index [2, B*2E]`` and ``batch [B*nbody]``."""

    params: dict
    node: torch.Tensor
    edge: torch.Tensor
    u: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    num_graphs: int


def to_pyg(graph: Graph) -> Batch:
    """The graphs as a PyG ``Batch`` (with ``ptr``)."""
    ptr = torch.zeros(graph.num_graphs + 1, dtype=torch.long, device=graph.x.device)
    ptr[1:] = torch.bincount(graph.batch, minlength=graph.num_graphs).cumsum(0)
    return Batch(x=graph.x, edge_index=graph.edge_index, edge_attr=graph.edge_attr, u=graph.u, batch=graph.batch,
                 ptr=ptr)


def batched_topology(edge_index: torch.Tensor, B: int, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``edge_index [2, E]`` of one graph of ``N`` nodes repeated for ``B`` graphs:
    ``(edge_index [2, B*E], batch [B*N])``."""
    dev = edge_index.device
    offsets = (torch.arange(B, device=dev) * N)[:, None, None]
    ei = (edge_index[None] + offsets).permute(1, 0, 2).reshape(2, -1)
    return ei, torch.arange(B, device=dev).repeat_interleave(N)


def concat_batches(batches: Sequence[Graph | Batch]) -> Graph | Batch:
    """One batch from batches of different systems (graph sizes may differ); PyG ``Batch`` in,
    PyG ``Batch`` out."""
    if len(batches) == 1:
        return batches[0]
    xs, eas, eis, us, bs = [], [], [], [], []
    node_off = graph_off = 0
    for b in batches:
        xs.append(b.x)
        eas.append(b.edge_attr)
        eis.append(b.edge_index + node_off)
        us.append(b.u)
        bs.append(b.batch + graph_off)
        node_off += b.x.shape[0]
        graph_off += b.num_graphs
    out = Graph(torch.cat(xs), torch.cat(eas), torch.cat(us), torch.cat(eis, 1), torch.cat(bs), graph_off)
    return to_pyg(out) if isinstance(batches[0], Batch) else out


def radius_pairs(positions: np.ndarray | torch.Tensor, radius: float) -> np.ndarray:
    """Pairs ``[K, 2]`` (int64 numpy, ``i < j``) of nodes of the same graph closer than ``radius``
    (distance ``<= radius``): the neighbour search of particle simulators.

    ``positions [B, M, 2]`` (or ``[M, 2]``): node ``j`` of graph ``b`` has the flat index ``b M + j``.
    One ``cKDTree`` search on float64 copies, outside autograd; non-finite positions get no pairs.
    """
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().double().numpy()
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim == 2:
        pos = pos[None]
    B, M, _ = pos.shape
    flat = pos.reshape(B * M, 2).copy()
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        flat[bad] = 0.0
    if B > 1:
        # One tree for the whole batch: graphs side by side, further apart than the radius.
        lo, hi = flat[:, 0].min(), flat[:, 0].max()
        flat[:, 0] += np.repeat(np.arange(B) * (hi - lo + 2 * radius + 1.0), M)
    if bad.any():
        # Park non-finite nodes far from everything (and from each other).
        far = np.abs(flat).max() + 10 * radius
        flat[bad] = np.stack([far + 3 * radius * np.arange(1, bad.sum() + 1), np.full(bad.sum(), far)], 1)
    return cKDTree(flat).query_pairs(radius, output_type="ndarray").astype(np.int64).reshape(-1, 2)
