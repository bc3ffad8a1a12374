"""Animations: RGB frames drawn headless with matplotlib, and animated GIFs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from gndesign.constraint_sets import constraint_terms
from gndesign.io import atomic_path
from gndesign.plotting import pyplot
from workflows.figures import draw_constraints, draw_particle_scene, draw_particles, particle_view

log = logging.getLogger(__name__)


def write_gif(frames, path: str | Path, fps: int = 25) -> Path | None:
    """Write RGB frames ``[H, W, 3]`` (uint8) as an animated GIF (atomically); return its path.

    A None frame is one the renderer could not draw (it has warned, see
    :func:`envs.control.render_or_none`): then no GIF is written and None is returned, as when
    there are no frames at all (with a warning). A missing video never fails a run."""
    path = Path(path)
    if any(f is None for f in frames):
        return None
    if not len(frames):
        log.warning("no frames were rendered: no video written to %s", path)
        return None
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def _frame_rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _figure_for(xlim, ylim):
    """A figure 6 inches wide (80 dpi) whose one axes fits the view's aspect ratio."""
    return pyplot().subplots(figsize=(6, max(2.5, 6 * (ylim[1] - ylim[0]) / (xlim[1] - xlim[0]) + 0.4)), dpi=80,
                             layout="constrained")


def particle_frames(arrays: dict, max_frames: int = 60) -> list[np.ndarray]:
    """RGB frames of the constrained particle rollout (:func:`workflows.constrain.constrain_particles`' arrays)."""
    cfg, traj, terms = arrays["cfg"], arrays["positions"], constraint_terms(arrays["bound"])
    xlim, ylim = particle_view(cfg, traj)
    stride = max(1, -(-len(traj) // max_frames))
    fig, ax = _figure_for(xlim, ylim)
    frames = []
    for t in range(0, len(traj), stride):
        ax.clear()
        draw_particle_scene(ax, cfg, arrays["obstacle"], terms, traj[0], xlim, ylim)
        draw_particles(ax, traj[t], cfg.particle_radius)
        ax.set_title(f"frame {t}", fontsize=9)
        frames.append(_frame_rgb(fig))
    pyplot().close(fig)
    return frames


def articulated_frames(arrays: dict, max_frames: int = 60) -> list[np.ndarray]:
    """RGB frames of the body origins, linked parent to child, in the plane of their largest
    motion, with the constraints drawn (:func:`workflows.constrain.constrain_articulated`' arrays)."""
    xpos, tree = arrays["xpos"], arrays["tree"]
    dims = tuple(sorted(np.argsort(np.ptp(xpos.reshape(-1, 3), 0))[-2:].tolist()))
    pts = xpos[..., list(dims)]
    pad = 0.2 * max(float(np.ptp(pts[..., 0])), float(np.ptp(pts[..., 1])), 0.5)
    xlim = (float(pts[..., 0].min()) - pad, float(pts[..., 0].max()) + pad)
    ylim = (float(pts[..., 1].min()) - pad, float(pts[..., 1].max()) + pad)
    stride = max(1, -(-len(xpos) // max_frames))
    fig, ax = _figure_for(xlim, ylim)
    terms = constraint_terms(arrays["bound"])
    frames = []
    for t in range(0, len(xpos), stride):
        ax.clear()
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        draw_constraints(ax, terms, xlim, ylim, pinned_from=xpos[0], dims=dims)
        for b in range(1, tree.nbody):  # links between bodies (not to the fixed world body), and body origins
            p = int(tree.body_parent[b])
            if p > 0:
                ax.plot(pts[t, [p, b], 0], pts[t, [p, b], 1], "-", color="C0", lw=3)
        ax.plot(pts[t, 1:, 0], pts[t, 1:, 1], "o", color="C0", ms=6)
        ax.set_title(f"t = {t * arrays['dt']:.2f} s", fontsize=9)
        ax.set_xlabel("xyz"[dims[0]])
        ax.set_ylabel("xyz"[dims[1]])
        frames.append(_frame_rgb(fig))
    pyplot().close(fig)
    return frames
