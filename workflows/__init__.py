"""The application layer: the plan, design, constrain, evaluate, inspect and generate workflows,
their figures and videos, and the ``gndesign`` command line over them.

The only package that imports ``gndesign`` (the core), ``envs`` and ``planners`` together.
Scripts import the workflow modules (``workflows.plan``, ``workflows.design`` ...), never
:mod:`workflows.cli`. Each workflow returns a JSON-ready dict; the command line prints it.
"""
