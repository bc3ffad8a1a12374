"""The obstacle-design particle scene, split along dm_control's Physics/Task line.

- :mod:`envs.obstacle.scene`: the scene's configuration, geometry and checks, design -> MJCF, the
  differentiable design forward kinematics, initial layouts;
- :mod:`envs.obstacle.simulation`: MuJoCo rollouts of designs and dataset generation;
- :mod:`envs.obstacle.goals`: what a design should achieve (bin, side), smooth losses and exact scores;
- :mod:`envs.obstacle.problem`: a design problem, scene + simulator + goal, as the optimizers see it.

Each module imports only those above it in this list.
"""
