"""Kinematic trees: a MuJoCo model's bodies and joints as a static graph.

Nodes are bodies (node 0 is the world body, a fixed node). Every joint is an edge from its body's
parent to the body; a body with several joints gets several edges (in MuJoCo's joint order), and a
body welded to its parent without joints gets one ``weld`` edge. The graph is stored once, with
the forward (parent -> child) edges first and their reverses after, and a direction flag tells
them apart.

Static features describe the system (masses, inertias, joint types, axes, anchors, damping,
actuation), so that one learned model can serve different systems and randomized parameter
families. The randomizable parameters (:data:`PARAM_KEYS`) enter the features through torch, so
features are differentiable with respect to them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np
import torch

from gndesign.datasets.params import model_params
from gndesign.errors import ModelError

HINGE, SLIDE, BALL, FREE, WELD = "hinge", "slide", "ball", "free", "weld"
EDGE_TYPES = (HINGE, SLIDE, BALL, FREE, WELD)
_MJ_JOINT_TYPES = {
    int(mujoco.mjtJoint.mjJNT_FREE): FREE,
    int(mujoco.mjtJoint.mjJNT_BALL): BALL,
    int(mujoco.mjtJoint.mjJNT_SLIDE): SLIDE,
    int(mujoco.mjtJoint.mjJNT_HINGE): HINGE,
}
NQ = {HINGE: 1, SLIDE: 1, BALL: 4, FREE: 7, WELD: 0}
NV = {HINGE: 1, SLIDE: 1, BALL: 3, FREE: 6, WELD: 0}
MAX_DOF = 6  # a free joint's degrees of freedom: per-edge dof slots are padded to this

_SUPPORTED_TRANSMISSIONS = "joint, joint-in-parent (hinge/slide joints) and fixed tendons"


def load_mjmodel(source: str | Path | mujoco.MjModel, assets: dict | None = None) -> mujoco.MjModel:
    """Compile an MJCF path or XML string (or pass an ``MjModel`` through).

    Raises:
        ModelError: the file is missing or MuJoCo cannot compile it (MuJoCo's reason included).
    """
    if isinstance(source, mujoco.MjModel):
        return source
    text = str(source)
    is_xml = text.lstrip().startswith("<")
    try:
        if is_xml:
            return mujoco.MjModel.from_xml_string(text, assets or {})
        path = Path(text)
        reject_directory(path)
        if not path.is_file():
            raise ModelError(f"MJCF file not found: {path} (give a system name or an existing .xml path)")
        return mujoco.MjModel.from_xml_path(str(path), assets or {})
    except ValueError as e:
        where = "MJCF string" if is_xml else text
        raise ModelError(f"cannot compile {where}: {mujoco_reason(e)} (fix the MJCF and retry)") from e


_TINYXML = re.compile(r"XML parse error \d+:\s*Error=(\w+) ErrorID=\d+ \(0x[0-9a-fA-F]+\) Line number=(\d+):?\s*(.*)")


def mujoco_reason(err: BaseException) -> str:
    """MuJoCo's compile error on one line, its reason and line kept: XML syntax errors (MuJoCo
    reports them as "XML parse error 6:" followed, on the next line, by TinyXML's error name and
    line) read "XML syntax error at line 4 (XML_ERROR_PARSING_ELEMENT)"."""
    text = " ".join(str(err).split())
    match = _TINYXML.fullmatch(text)
    if match:
        name, line, detail = match.groups()
        return f"XML syntax error at line {line} ({name}{': ' + detail if detail else ''})"
    return text or type(err).__name__


def reject_directory(path: Path) -> None:
    """Raise :class:`ModelError` when the model path ``path`` is a directory (the message lists
    the ``.xml`` files in it)."""
    if path.is_dir():
        models = sorted(p.name for p in path.glob("*.xml"))[:3]
        inside = f" (it holds {', '.join(models)})" if models else ""
        raise ModelError(f"{path} is a directory, not a model file: give the path of an MJCF .xml file{inside}")


@dataclass
class KinematicTree:
    """The static graph of a MuJoCo model plus everything forward kinematics needs.

    Array shapes use ``nbody`` bodies, ``njnt`` joints, ``E`` forward edges (joints plus welds),
    ``nq``/``nv`` generalized coordinates/velocities and ``nu`` actuators.
    """

    name: str
    body_names: list[str]
    joint_names: list[str]
    actuator_names: list[str]
    body_parent: np.ndarray  # [nbody] int, -1 for the world body
    body_pos: np.ndarray  # [nbody, 3] body frame origin in the parent frame (reference config)
    body_quat: np.ndarray  # [nbody, 4] body frame orientation in the parent frame (w, x, y, z)
    body_ipos: np.ndarray  # [nbody, 3] centre of mass in the body frame
    body_iquat: np.ndarray  # [nbody, 4] principal inertia frame in the body frame
    jnt_type: list[str]  # [njnt]
    jnt_body: np.ndarray  # [njnt]
    jnt_qposadr: np.ndarray  # [njnt]
    jnt_dofadr: np.ndarray  # [njnt]
    jnt_pos: np.ndarray  # [njnt, 3] anchor in the body frame
    jnt_axis: np.ndarray  # [njnt, 3] axis in the body frame
    jnt_limited: np.ndarray  # [njnt] bool
    jnt_range: np.ndarray  # [njnt, 2]
    jnt_stiffness: np.ndarray  # [njnt]
    qpos0: np.ndarray  # [nq]
    dof_armature: np.ndarray  # [nv]
    dof_frictionloss: np.ndarray  # [nv]
    ctrlrange: np.ndarray  # [nu, 2] (+-inf when the actuator is not control-limited)
    actuator_gain: np.ndarray  # [nu] force per unit control for fixed-gain actuators, else 1
    actuator_basis: np.ndarray  # [nu, 6, nv] moment arm = sum_k gear[a, k] * basis[a, k]
    gravity: np.ndarray  # [3]
    timestep: float
    nominal: dict[str, np.ndarray] = field(repr=False)  # the model's own PARAM_KEYS values
    # Forward edges (parent -> child): the joint (or -1 for a weld) and its type.
    edge_parent: np.ndarray = field(init=False)
    edge_child: np.ndarray = field(init=False)
    edge_joint: np.ndarray = field(init=False)
    edge_type: list[str] = field(init=False)

    def __post_init__(self) -> None:
        parent, child, joint, etype = [], [], [], []
        jnt_of_body: dict[int, list[int]] = {}
        for j, b in enumerate(self.jnt_body):
            jnt_of_body.setdefault(int(b), []).append(j)
        for b in range(1, self.nbody):
            joints = jnt_of_body.get(b, [])
            for j in joints:
                parent.append(int(self.body_parent[b]))
                child.append(b)
                joint.append(j)
                etype.append(self.jnt_type[j])
            if not joints:
                parent.append(int(self.body_parent[b]))
                child.append(b)
                joint.append(-1)
                etype.append(WELD)
        self.edge_parent = np.asarray(parent, dtype=np.int64)
        self.edge_child = np.asarray(child, dtype=np.int64)
        self.edge_joint = np.asarray(joint, dtype=np.int64)
        self.edge_type = etype
        self._tensor_cache: dict = {}

    def tensors(self, names: tuple[str, ...], dtype: torch.dtype, device) -> tuple[torch.Tensor, ...]:
        """The named array fields as (cached) torch tensors: per-step code should not convert them
        from numpy every call."""
        out = []
        for name in names:
            key = (name, dtype, torch.device(device))
            if key not in self._tensor_cache:
                self._tensor_cache[key] = torch.as_tensor(getattr(self, name), dtype=dtype, device=device)
            out.append(self._tensor_cache[key])
        return tuple(out)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_model(cls, source: str | Path | mujoco.MjModel, name: str | None = None,
                   assets: dict | None = None) -> KinematicTree:
        """Build the tree of an ``MjModel``, an MJCF path or an MJCF XML string.

        Raises:
            ModelError: the model does not compile, or an actuator uses a transmission that cannot
                be mapped onto joints (site, body, slider-crank or spatial tendon transmissions).
        """
        m = load_mjmodel(source, assets)

        def names(obj, n):
            return [mujoco.mj_id2name(m, obj, i) or f"{obj.name[6:].lower()}{i}" for i in range(n)]

        jnt_type = [_MJ_JOINT_TYPES[int(t)] for t in m.jnt_type]
        actuator_names = names(mujoco.mjtObj.mjOBJ_ACTUATOR, m.nu)
        basis = np.zeros((m.nu, MAX_DOF, m.nv))
        for a in range(m.nu):
            trn = int(m.actuator_trntype[a])
            target = int(m.actuator_trnid[a, 0])
            if trn in (int(mujoco.mjtTrn.mjTRN_JOINT), int(mujoco.mjtTrn.mjTRN_JOINTINPARENT)):
                jt = jnt_type[target]
                if trn == int(mujoco.mjtTrn.mjTRN_JOINTINPARENT) and jt in (BALL, FREE):
                    raise ModelError(
                        f"actuator '{actuator_names[a]}': joint-in-parent transmission on a {jt} "
                        f"joint is not supported (supported: {_SUPPORTED_TRANSMISSIONS})")
                adr = int(m.jnt_dofadr[target])
                for k in range(NV[jt]):
                    basis[a, k, adr + k] = 1.0
            elif trn == int(mujoco.mjtTrn.mjTRN_TENDON):
                t = target
                adr, num = int(m.tendon_adr[t]), int(m.tendon_num[t])
                wraps = range(adr, adr + num)
                if any(int(m.wrap_type[w]) != int(mujoco.mjtWrap.mjWRAP_JOINT) for w in wraps):
                    tname = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_TENDON, t) or f"tendon{t}"
                    raise ModelError(
                        f"actuator '{actuator_names[a]}' drives spatial tendon '{tname}', which "
                        f"is not supported (supported: {_SUPPORTED_TRANSMISSIONS})")
                for w in wraps:
                    j = int(m.wrap_objid[w])
                    basis[a, 0, int(m.jnt_dofadr[j])] += float(m.wrap_prm[w])
            else:
                kind = mujoco.mjtTrn(trn).name.replace("mjTRN_", "").lower()
                raise ModelError(
                    f"actuator '{actuator_names[a]}' uses a {kind} transmission, which is not "
                    f"supported (supported: {_SUPPORTED_TRANSMISSIONS})")
        fixed_gain = m.actuator_gaintype == int(mujoco.mjtGain.mjGAIN_FIXED)
        gain = np.where(fixed_gain, m.actuator_gainprm[:, 0], 1.0)
        ctrlrange = np.where(m.actuator_ctrllimited[:, None].astype(bool), m.actuator_ctrlrange,
                             np.array([-np.inf, np.inf]))
        tree = cls(
            name=name or "model",
            body_names=names(mujoco.mjtObj.mjOBJ_BODY, m.nbody),
            joint_names=names(mujoco.mjtObj.mjOBJ_JOINT, m.njnt),
            actuator_names=actuator_names,
            body_parent=np.where(np.arange(m.nbody) == 0, -1, m.body_parentid).astype(np.int64),
            body_pos=m.body_pos.copy(), body_quat=m.body_quat.copy(),
            body_ipos=m.body_ipos.copy(), body_iquat=m.body_iquat.copy(),
            jnt_type=jnt_type, jnt_body=m.jnt_bodyid.astype(np.int64).copy(),
            jnt_qposadr=m.jnt_qposadr.astype(np.int64).copy(),
            jnt_dofadr=m.jnt_dofadr.astype(np.int64).copy(),
            jnt_pos=m.jnt_pos.copy(), jnt_axis=m.jnt_axis.copy(),
            jnt_limited=m.jnt_limited.astype(bool).copy(), jnt_range=m.jnt_range.copy(),
            jnt_stiffness=m.jnt_stiffness.copy(), qpos0=m.qpos0.copy(),
            dof_armature=m.dof_armature.copy(), dof_frictionloss=m.dof_frictionloss.copy(),
            ctrlrange=ctrlrange, actuator_gain=gain, actuator_basis=basis,
            gravity=m.opt.gravity.copy(), timestep=float(m.opt.timestep),
            nominal=model_params(m),
        )
        return tree

    # ----------------------------------------------------------------------------- sizes
    # MuJoCo's names; ``num_edges`` counts forward (parent -> child) edges: the graph holds twice as many.
    nbody = property(lambda self: len(self.body_names))
    njnt = property(lambda self: len(self.jnt_type))
    nq = property(lambda self: len(self.qpos0))
    nv = property(lambda self: len(self.dof_armature))
    nu = property(lambda self: len(self.actuator_names))
    num_edges = property(lambda self: len(self.edge_type))

    def edge_index(self) -> np.ndarray:
        """``[2, 2E]`` sender/receiver body indices: forward edges, then their reverses."""
        fwd = np.stack([self.edge_parent, self.edge_child])
        return np.concatenate([fwd, fwd[::-1]], axis=1)

    def edge_dofs(self) -> np.ndarray:
        """``[E, MAX_DOF]`` the dof index of each forward edge's slots, ``-1`` where unused."""
        out = -np.ones((self.num_edges, MAX_DOF), dtype=np.int64)
        for e, (j, t) in enumerate(zip(self.edge_joint, self.edge_type, strict=True)):
            if j >= 0:
                out[e, : NV[t]] = self.jnt_dofadr[j] + np.arange(NV[t])
        return out

    def edge_label(self, e: int) -> str:
        j = int(self.edge_joint[e])
        jname = self.joint_names[j] if j >= 0 else "(weld)"
        return (f"{self.body_names[self.edge_parent[e]]} -> {self.body_names[self.edge_child[e]]}"
                f" [{self.edge_type[e]}] {jname}")

    def nominal_params(self) -> dict[str, np.ndarray]:
        """The model's own physical parameters: ``body_mass [nbody]``, ``body_inertia
        [nbody, 3]``, ``dof_damping [nv]``, ``actuator_gear [nu, 6]``."""
        return {k: v.copy() for k, v in self.nominal.items()}

    def depth(self) -> int:
        """Hops from the world body to the farthest body: what message passing must cover for a
        joint's prediction to see every body of its chain."""
        depth = [0] * self.nbody
        for b in range(1, self.nbody):  # MuJoCo orders a body after its parent
            depth[b] = depth[int(self.body_parent[b])] + 1
        return max(depth)

    def signature(self) -> dict:
        """What a trained model depends on: used to refuse a checkpoint for another system."""
        return {
            "bodies": self.body_names,
            "parents": self.body_parent.tolist(),
            "joints": [f"{n}:{t}" for n, t in zip(self.joint_names, self.jnt_type, strict=True)],
            "nq": self.nq, "nv": self.nv, "nu": self.nu,
        }

    def distance(self, other: KinematicTree) -> tuple[int, int] | None:
        """How far ``other``'s structure is from this tree's, as a sort key: the differences in depth
        and in body count added, then the larger ``other`` first; None where the two do not have the
        same joint types. A swimmer with 12 links is (6, -10) from swimmer9 and (13, -8) from cheetah;
        swimmer7 is (2, -9) from swimmer8, nearer than from swimmer6 (2, -7); cartpole's slide makes
        it None from acrobot."""
        if set(self.edge_type) != set(other.edge_type):
            return None
        return abs(self.depth() - other.depth()) + abs(self.nbody - other.nbody), -other.nbody

    def signature_hash(self) -> str:
        blob = json.dumps(self.signature(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # ----------------------------------------------------------------------------- features
    def actuator_moment(self, gear: torch.Tensor) -> torch.Tensor:
        """Moment arms ``[B, nu, nv]`` from gears ``[B, nu, 6]`` (generalized force per unit force)."""
        (basis,) = self.tensors(("actuator_basis",), gear.dtype, gear.device)
        return torch.einsum("bak,akv->bav", gear, basis)

    def generalized_actuation(self, action: torch.Tensor, gear: torch.Tensor) -> torch.Tensor:
        """Generalized force ``[B, nv]`` that controls ``[B, nu]`` apply through the gears.

        Exact for motors (fixed gain, no bias); for other actuator types it is the gain-scaled
        control, which the learned model complements from the state.
        """
        (gain,) = self.tensors(("actuator_gain",), action.dtype, action.device)
        return torch.einsum("ba,bav->bv", action * gain, self.actuator_moment(gear))
