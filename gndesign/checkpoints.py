"""Checkpoints of every model family: one writer, one reader, one loader.

A checkpoint holds everything a run needs to continue exactly as if it had never stopped: the
model (with normalizer statistics; with ``train.ema_decay`` the weights' average, and the raw
weights the optimizer continues from as ``train_model``), optimizer, scheduler, step, every RNG
state, the resolved configuration, the model's family (:data:`FAMILIES`) and what the family
records to rebuild and check it (the systems and feature layout, or the scene).

On disk a checkpoint is one header line, ``HASH_HEADER`` and the payload's sha256 (hex), then the
payload: the ``torch.save`` bytes of the checkpoint dict. The hash is verified at every read, so a
flipped bit anywhere in the file is refused, never silently loaded (read files with
:func:`read_checkpoint`, not ``torch.load``). Checkpoints written before the hash (a plain
``torch.save`` file, with ``kind``/``front`` instead of ``family``) still load.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from gndesign import __version__
from gndesign.cgns_training import CGNS_ARTICULATED, CGNS_PARTICLES
from gndesign.config import RunConfig
from gndesign.datasets.base import one_line
from gndesign.errors import GndesignError, writing
from gndesign.families import Family
from gndesign.forward_training import FORWARD
from gndesign.io import atomic_write_bytes
from gndesign.nbody_training import NBODY
from gndesign.particle_training import PARTICLES
from gndesign.policy_net import POLICY

CHECKPOINT_FORMAT = "gndesign-checkpoint-v1"  # the checkpoint dict's layout
HASH_HEADER = b"gndesign-checkpoint sha256="  # then 64 hex digits and a newline, then the payload
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"

#: Every model family by name (``config.family``, ``blob["family"]``).
FAMILIES: dict[str, Family] = {f.name: f for f in (FORWARD, PARTICLES, CGNS_PARTICLES, CGNS_ARTICULATED, NBODY, POLICY)}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise GndesignError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: RunConfig, step: int,
                    optimizer=None, scheduler=None, rng: dict | None = None, extra: dict | None = None,
                    weights: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write a checkpoint of ``model`` (of ``config.family``) atomically, with its content hash.

    ``weights``: the state dict every reader loads as the model (``train.ema_decay``: the weights'
    average) instead of ``model``'s own; those are then kept as ``train_model``, for resuming only."""
    family = get_family(config.family)
    own = model.state_dict()
    blob = {"format": CHECKPOINT_FORMAT, "family": family.name, "gndesign_version": __version__, "step": step,
            "config": config.to_dict(), "model": own if weights is None else weights, **family.describe(model),
            "train_model": None if weights is None else own,
            "optimizer": optimizer.state_dict() if optimizer else None,
            "scheduler": scheduler.state_dict() if scheduler else None, "rng": rng, "extra": extra or {}}
    _write(path, blob)


def _write(path: str | os.PathLike, blob: dict) -> None:
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    payload = buffer.getvalue()
    with writing(path):
        atomic_write_bytes(path, HASH_HEADER + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def _torch_load(data: bytes, path: Path) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a broken file
        raise GndesignError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]} "
                            "(the file is truncated or not a gndesign checkpoint)") from None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict of file ``path``, its content hash verified (older files: upgraded to
    the current layout, ``family`` instead of ``kind``/``front``)."""
    path = Path(path)
    if not path.is_file():
        raise GndesignError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    if data.startswith(HASH_HEADER):
        start = len(HASH_HEADER) + 65
        digest, data = data[len(HASH_HEADER):start], data[start:]
        if digest != hashlib.sha256(data).hexdigest().encode() + b"\n":
            raise GndesignError(f"checkpoint {path} is corrupted (its content does not match its sha256 hash): "
                                "copy it again or retrain")
    blob = _torch_load(data, path)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise GndesignError(f"{path} is not a gndesign checkpoint (expected format {CHECKPOINT_FORMAT})")
    if "family" not in blob:  # written before families: "kind" (absent: forward), "front" for a C-GNS
        kind, front = blob.pop("kind", "forward"), blob.pop("front", None)
        blob["family"] = f"cgns-{front}" if kind == "cgns" else kind
    return blob


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a checkpoint for inference only (no optimizer, scheduler or RNG state: about a third
    of the size). It loads with :func:`load_model` like any checkpoint but cannot be resumed."""
    blob = read_checkpoint(src)
    blob.update(optimizer=None, scheduler=None, rng=None, train_model=None)
    blob["extra"] = dict(blob.get("extra") or {}, exported_from_step=blob["step"])
    _write(dst, blob)
    return Path(dst)


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A checkpoint path from a path or ``pretrained:NAME`` (shipped in ``gndesign/pretrained``)."""
    text = str(spec)
    if text.startswith("pretrained:"):
        name = text.split(":", 1)[1]
        path = PRETRAINED_DIR / f"{name}.pt"
        if not path.is_file():
            names = sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))
            raise GndesignError(f"no pretrained model {name!r}; available: {', '.join(names) or 'none'}")
        return path
    return Path(text)


def check_family(blob: dict, family: str | Sequence[str] | None, where) -> None:
    """Refuse a checkpoint whose family is not ``family`` (a name, or several; None: any)."""
    if family is None:
        return
    names = (family,) if isinstance(family, str) else tuple(family)
    if blob["family"] in names:
        return
    have, wanted = get_family(blob["family"]), [get_family(n) for n in names]
    whats = {f.what for f in wanted}
    text = whats.pop() if len(wanted) > 1 and len(whats) == 1 else " or ".join(f.title for f in wanted)
    raise GndesignError(f"checkpoint {where} holds a {have.name!r} model ({have.title}), not {text}")


def load_model(path: str | os.PathLike, family: str | Sequence[str] | None = None, *, system: str | None = None,
               allow_new_system: bool = False, mjcf_sha256: str | None = None,
               scene: Mapping[str, Any] | None = None) -> tuple[torch.nn.Module, dict]:
    """A trained model of any family (in eval mode) and its checkpoint dict.

    Args:
        path: a checkpoint file or ``pretrained:NAME``.
        family: the family (or families) the caller can use (None: any); see :data:`FAMILIES`.
        system: an articulated model's system; must be one it was trained on unless
            ``allow_new_system`` (graph networks only, e.g. zero-shot swimmers).
        mjcf_sha256: if given with ``system``, the system's MJCF must be the one trained on.
        scene: a particle model's scene; a scene that differs from the training scene (physical
            keys, and every other key both have) is refused.

    Raises:
        GndesignError: the checkpoint is unreadable or corrupted, of another family, its features
            differ from this version's, or the system or scene does not match (the message names
            the mismatch).
    """
    path = resolve_checkpoint(path)
    blob = read_checkpoint(path)
    check_family(blob, family, path)
    fam = get_family(blob["family"])
    fam.check(blob, path, system=system, allow_new_system=allow_new_system, mjcf_sha256=mjcf_sha256, scene=scene)
    cfg = RunConfig.from_dict(blob["config"], particles="scene" in blob, cgns="solver" in blob["config"])
    model = fam.build(cfg, blob)
    load_weights(model, blob["model"], path)
    model.eval()
    return model, blob


def load_weights(model: torch.nn.Module, state: Mapping[str, Any], where) -> None:
    """Load a checkpoint's weights ``state`` into ``model`` (built from the checkpoint's
    configuration); a tensor missing, extra or of another shape is refused with a one-line message
    naming the first (the checkpoint's configuration was edited, or another version wrote it)."""
    fix = "the checkpoint does not fit its own configuration (edited?): retrain it or restore the original file"
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # torch lists every mismatch over many lines: name the first
        text = str(e)
        shape = re.search(r"size mismatch for ([^:]+): copying a param with shape torch.Size\((\[.*?\])\) from "
                          r"checkpoint, the shape in current model is torch.Size\((\[.*?\])\)", text)
        key = re.search(r"(Missing|Unexpected) key\(s\) in state_dict: \"([^\"]+)\"", text)
        if shape:
            what = f"tensor {shape[1]} has shape {shape[2]}, the model needs {shape[3]}"
        elif key:
            what = f"tensor {key[2]} is {key[1].lower()}"
        else:
            what = one_line(text)
        raise GndesignError(f"checkpoint {where}: {what}; {fix}") from None
