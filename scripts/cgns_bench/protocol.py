"""The benchmark protocol's fixed settings (issue 6, section 3): model and training options, the
unseen constraints, the cartpole horizons, the noise test and the targets."""

from __future__ import annotations

#: The obstacle particle simulator's options (scripts/make_pretrained.py's "obstacle" model),
#: with logging, validation and checkpoints every 100/500/500 steps for minute budgets.
PARTICLE_OPTIONS = ["model.latent_size=64", "model.mlp_hidden_size=64", "model.message_passing_steps=3",
                    "model.radius=3.0", "model.history=5", "train.batch_size=4", "train.vel_noise=0.03",
                    "train.val_fraction=0.05", "train.log_every=100", "train.eval_every=500",
                    "train.checkpoint_every=500"]
#: Cartpole's GN (scripts/bench_forward.py's MODEL["gn"] and its train options).
CARTPOLE_OPTIONS = ["model.latent_size=64", "model.mlp_hidden_size=64", "model.message_passing_steps=2",
                    "train.eval_every=200", "train.log_every=100", "train.checkpoint_every=1000"]
COMMON = ["train.threads=1", "train.seed=0", "train.steps=1000000"]  # the wall-clock budget binds
SOLVER = ["solver.iterations=5"]  # and the solver's defaults (solver.iterations_min)
OBSTACLE = "disk center=0.0,1.2 radius=0.3"
WALL = "wall axis=x upper=0.5 nodes=cart"
CARTPOLE_HORIZONS = (1, 10, 50, 100, 120)
NOISE_SE, NOISE_REL = 2.0, 0.01  # "noise": max(2 paired standard errors, 1% of the error)
RATIO_TARGET, PENETRATION_TARGET = 1.5, 0.10
