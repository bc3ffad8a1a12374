"""The C-GNS benchmark's parts (``scripts/bench_cgns.py`` is its command line), one job a module:

- ``protocol``: the protocol's fixed settings (model options, the unseen constraints, targets, noise);
- ``data``: the obstacle-scene and cartpole data sets (generated when missing);
- ``train``: the training jobs (a wall-clock or optimizer-step budget, one thread each);
- ``measures``: measurements shared by both systems (the iteration sweep's paired noise test,
  constraint weights, violation reports);
- ``particles`` and ``cartpole``: the evaluations of each system;
- ``jobs``: evaluation jobs and their cache;
- ``report``: the targets, the markdown report and the figure.

The modules import the library (``gndesign``, ``envs``, ``workflows``), never its command line, and
import one another down this list only.
"""
