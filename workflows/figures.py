"""Every figure the workflows draw (matplotlib, headless).

Each ``*_figure`` function returns the open :class:`matplotlib.figure.Figure` (tests read its axes
and data); write it with :func:`gndesign.plotting.save_figure`, which also closes it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.patches import Circle, Rectangle

from gndesign.constraint_sets import constraint_terms
from gndesign.constraints import AXES, Box, Disk, HalfPlane, JointLimit, Pin, Wall
from gndesign.plotting import pyplot


# ------------------------------------------------------------------------------------ planning
def episode_figure(result: dict):
    """Reward and actions over time of the first episode of a :func:`workflows.plan.plan_episodes` result."""
    plt = pyplot()
    ep = result["episodes"][0]
    t = np.arange(len(ep["rewards"])) * result["control_timestep"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True)
    a1.plot(t, ep["rewards"], "C0")
    a1.set_ylabel("reward")
    a1.set_title(f"{result['task']}: {result['planner']} planner on {result['model']} (return {ep['return']:.1f})")
    a2.plot(t, np.array(ep["actions"]), lw=1)
    a2.set_ylabel("action")
    a2.set_xlabel("time [s]")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ design
def design_figure(panels: list[dict], walls: tuple[float, float], floor: float, target: tuple[float, float] | None,
                  title: str = ""):
    """Obstacles with particle traces, one panel each (e.g. the initial and the final design).

    Each panel is ``{"title": str, "obstacle": [K+1, 2] vertices, "traces": [T+1, N, 2] positions}``
    (numpy or torch); ``walls`` are the inner wall faces' x, ``target`` the bin's ``(x_lo, x_hi)``.
    """
    plt = pyplot()
    top = max(max(float(np.nanmax(np.asarray(pn["traces"], dtype=float)[..., 1])),
                  float(np.nanmax(np.asarray(pn["obstacle"], dtype=float)[:, 1]))) for pn in panels) + 0.1
    top = min(top, floor + 2 * (walls[1] - walls[0]))  # a diverged trace must not squash the picture
    width = 5.0
    height = width * (top - floor + 0.02) / (walls[1] - walls[0] + 0.04)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height + 0.9), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        traces = np.asarray(panel["traces"], dtype=float)
        obstacle = np.asarray(panel["obstacle"], dtype=float)
        if target is not None:
            ax.axvspan(target[0], target[1], ymax=0.12, color="C2", alpha=0.25, lw=0, label="target bin")
        ax.plot(traces[:, :, 0], traces[:, :, 1], color="C0", lw=0.4, alpha=0.35)
        ax.scatter(traces[0, :, 0], traces[0, :, 1], s=4, color="C0", alpha=0.6)
        ax.scatter(traces[-1, :, 0], traces[-1, :, 1], s=6, color="C3", zorder=3, label="final positions")
        ax.plot(obstacle[:, 0], obstacle[:, 1], color="k", lw=3, solid_capstyle="round", label="obstacle")
        ax.plot(obstacle[:1, 0], obstacle[:1, 1], "ks", ms=5)
        ax.axvline(walls[0], color="0.4", lw=2)
        ax.axvline(walls[1], color="0.4", lw=2)
        ax.axhline(floor, color="0.4", lw=2)
        ax.set_xlim(walls[0] - 0.02, walls[1] + 0.02)
        ax.set_ylim(floor - 0.02, top)
        ax.set_aspect("equal")
        ax.set_title(panel.get("title", ""), fontsize=9)
    axes[0][0].legend(loc="upper left", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def history_figure(history: Mapping[str, list[float]], title: str = ""):
    """Every named loss term per iteration (the design loss curves): objective left, terms right."""
    plt = pyplot()
    names = [k for k in history if k not in ("best", "feasible")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for k in names:
        axes[0 if k in ("objective", "total") else 1].plot(history[k], label=k, lw=1.2)
    if "best" in history:
        axes[0].plot(history["best"], "k--", lw=1, label="best so far")
    for ax, t in zip(axes, ("objective", "terms"), strict=True):
        ax.set_xlabel("iteration")
        ax.set_title(t, fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ constraints
def _plane_axis(axis) -> int:
    """A wall's axis in 2-d data ``(x, z)``: x -> 0; y, z, 1, 2 -> 1."""
    i = AXES[axis] if isinstance(axis, str) else int(axis)
    return min(i, 1)


def draw_constraints(ax, terms, xlim, ylim, pinned_from=None, dims: tuple[int, int] | None = None) -> None:
    """Draw bound constraints in a 2-d view: disks, boxes, half-planes and walls shaded on their
    forbidden side (red), regions to stay in outlined (green), pinned points as crosses.

    ``dims``: which coordinates of 3-d constraints are the view's axes (e.g. ``(0, 2)``, an x-z view
    of bodies); None: 2-d data ``(x, z)`` (particles). ``pinned_from``: ``[N, D]`` start positions
    (pins without ``at``).
    """
    planar = dims is None
    dims = (0, 1) if planar else tuple(dims)
    bad = {"color": "C3", "alpha": 0.25, "lw": 0}
    for c in terms:
        if isinstance(c, Disk | Box) and len(c.center if isinstance(c, Disk) else c.lower) > max(dims):
            keep_in = c.keep == "in"
            style = {"fill": False, "ec": "C2", "lw": 1.5, "ls": "--"} if keep_in else {"fc": "C3", "alpha": 0.35}
            if isinstance(c, Disk):
                ax.add_patch(Circle((c.center[dims[0]], c.center[dims[1]]), c.radius, **style))
            else:
                lo = [c.lower[i] for i in dims]
                hi = [c.upper[i] for i in dims]
                ax.add_patch(Rectangle(lo, hi[0] - lo[0], hi[1] - lo[1], **style))
        elif isinstance(c, HalfPlane) and len(c.normal) > max(dims):
            n = np.array([c.normal[i] for i in dims]) / np.linalg.norm(c.normal)
            X, Y = np.meshgrid(np.linspace(*xlim, 200), np.linspace(*ylim, 200))
            side = n[0] * X + n[1] * Y - c.offset
            ax.contourf(X, Y, side, levels=[-np.inf, 0.0], colors=["C3"], alpha=0.25)
            ax.contour(X, Y, side, levels=[0.0], colors=["C3"], linewidths=1.5)
        elif isinstance(c, Wall):
            i = _plane_axis(c.axis) if planar else (AXES[c.axis] if isinstance(c.axis, str) else int(c.axis))
            if i not in dims:
                continue
            horizontal = dims.index(i) == 1
            line, span = (ax.axhline, ax.axhspan) if horizontal else (ax.axvline, ax.axvspan)
            lim = ylim if horizontal else xlim
            if c.lower is not None:
                line(c.lower, color="C3", lw=1.5)
                span(min(lim[0], c.lower), c.lower, **bad)
            if c.upper is not None:
                line(c.upper, color="C3", lw=1.5)
                span(c.upper, max(lim[1], c.upper), **bad)
        elif isinstance(c, Pin):
            if c.at is not None and len(c.at) > max(dims):
                pts = np.array([[c.at[i] for i in dims]])
            elif pinned_from is not None and c.nodes is not None:
                pts = pinned_from[c.nodes][:, list(dims)]
            else:
                continue
            ax.plot(pts[:, 0], pts[:, 1], "x", color="C3", ms=9, mew=2.5, zorder=5)


def particle_view(cfg, *trajs) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(xlim, ylim)`` that show the scene ``cfg`` and every trajectory ``[T+1, N, 2]``."""
    top = max(float(np.max(t[..., 1])) for t in trajs)
    return (cfg.x_min - 0.1, cfg.x_max + 0.1), (cfg.floor - 0.1, max(top, cfg.source_z[1]) + 0.2)


def draw_particle_scene(ax, cfg, obstacle, terms, start, xlim, ylim) -> None:
    """Floor, walls, the obstacle's vertices ``[K+1, 2]`` and the constraints ``terms`` (pins at ``start``)."""
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axhline(cfg.floor, color="k", lw=2)
    ax.axvline(cfg.x_min, color="k", lw=2)
    ax.axvline(cfg.x_max, color="k", lw=2)
    ax.plot(obstacle[:, 0], obstacle[:, 1], "-", color="0.3", lw=3, solid_capstyle="round")
    draw_constraints(ax, terms, xlim, ylim, pinned_from=start)


def draw_particles(ax, pos, radius, color="C0") -> None:
    """Particles ``[N, 2]`` as disks of their radius."""
    ax.add_collection(PatchCollection([Circle(p, radius) for p in pos], fc=color, ec="k", lw=0.3, alpha=0.8))


def particle_constraints_figure(result: dict, arrays: dict):
    """Particle trajectories (thin lines) and final positions with the obstacle and the
    constraints drawn; with a baseline, the rollout without constraints on the left
    (:func:`workflows.constrain.constrain_particles`' result and arrays)."""
    plt = pyplot()
    cfg, terms = arrays["cfg"], constraint_terms(arrays["bound"])
    panels = [("without the constraints", arrays["baseline"], result.get("unconstrained"))] \
        if arrays["baseline"] is not None else []
    panels.append(("with the constraints", arrays["positions"], result["violations"]))
    xlim, ylim = particle_view(cfg, *(p[1] for p in panels))
    w = (xlim[1] - xlim[0]) / (ylim[1] - ylim[0])
    fig, axes = plt.subplots(1, len(panels), figsize=(min(max(4 * w, 3), 7.5) * len(panels), 4.6), squeeze=False,
                             layout="constrained")
    for ax, (title, traj, rep) in zip(axes[0], panels, strict=True):
        draw_particle_scene(ax, cfg, arrays["obstacle"], terms, traj[0], xlim, ylim)
        for i in range(traj.shape[1]):
            ax.plot(traj[:, i, 0], traj[:, i, 1], "-", color="C0", lw=0.5, alpha=0.4)
        draw_particles(ax, traj[-1], cfg.particle_radius)
        ax.set_title(f"{title}: max violation {rep['max_radii']:.2f} radii", fontsize=9)
        ax.set_xlabel("x [m]")
    axes[0][0].set_ylabel("z [m]")
    fig.suptitle(f"C-GNS, {result['particles']} particles, {result['steps']} frames, "
                 f"{result['iterations']} solver iterations per frame", fontsize=10)
    return fig


def constrained_series(c, tree, qpos, xpos):
    """``(label, values [T+1, k], lower, upper, names)`` of what a bound constraint constrains in an
    articulated rollout of ``tree``: joint coordinates for joint limits, body coordinates for
    walls; None for other kinds."""
    if isinstance(c, JointLimit):
        names = {int(tree.jnt_qposadr[j]): n for j, n in enumerate(tree.joint_names)}
        return ("qpos", qpos[:, c.joints], c.lower, c.upper, [names.get(j, f"qpos[{j}]") for j in c.joints])
    if isinstance(c, Wall) and c.quantity in ("positions", "xpos"):
        i = AXES[c.axis] if isinstance(c.axis, str) else int(c.axis)
        nodes = c.nodes if c.nodes is not None else list(range(1, tree.nbody))
        return (f"body {'xyz'[i]} [m]", xpos[:, nodes, i], c.lower, c.upper, [tree.body_names[n] for n in nodes])
    return None


def articulated_constraints_figure(result: dict, arrays: dict):
    """One panel per constraint: the constrained coordinate over time with its limits (joint
    limits, walls), or the constraint's violation per step (other kinds); dashed: no constraints
    (:func:`workflows.constrain.constrain_articulated`' result and arrays)."""
    plt = pyplot()
    terms = constraint_terms(arrays["bound"])
    t = np.arange(len(arrays["qpos"])) * arrays["dt"]
    fig, axes = plt.subplots(len(terms), 1, figsize=(7, 1.2 + 2.2 * len(terms)), sharex=True, squeeze=False,
                             layout="constrained")
    base = arrays["baseline"]
    for k, (ax, c) in enumerate(zip(axes[:, 0], terms, strict=True)):
        series = constrained_series(c, arrays["tree"], arrays["qpos"], arrays["xpos"])
        if series is None:
            ax.plot(t, result["violations"]["constraints"][k]["per_step_max"], "C0", label="with the constraints")
            if base is not None:
                ax.plot(t, result["unconstrained"]["constraints"][k]["per_step_max"], "C0--", label="without")
            ax.set_ylabel("violation")
        else:
            label, values, lower, upper, names = series
            for j, name in enumerate(names):
                ax.plot(t, values[:, j], f"C{j % 10}", label=name)
            if base is not None:
                bvals = constrained_series(c, arrays["tree"], base["qpos"], base["xpos"])[1]
                for j in range(len(names)):
                    ax.plot(t, bvals[:, j], f"C{j % 10}--", lw=1, label="without constraints" if j == 0 else None)
            for lim in (lower, upper):
                for v in ([] if lim is None else np.atleast_1d(lim)):
                    ax.axhline(float(v), color="C3", lw=1.5)
            ax.set_ylabel(label)
        ax.set_title(result["constraints"][k], fontsize=9)
        ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("time [s]")
    fig.suptitle(f"C-GNS on {result['system']}: {result['steps']} steps, {result['iterations']} solver iterations",
                 fontsize=10)
    return fig
