"""``gndesign tasks`` (list, show, check task files) and ``gndesign plan SYSTEM --task FILE``."""

from __future__ import annotations

import argparse
import json


def cmd_tasks(args: argparse.Namespace) -> int:
    from workflows.tasks import check_task, show_task, task_listing

    if args.show:
        print(show_task(args.show), end="")
        return 0
    if args.check:
        print(json.dumps(check_task(args.check, args.system), indent=2))
        return 0
    rows = task_listing()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<20} {r['description']}")
    return 0


def _plan_with_task_file(cmd_plan):
    """``plan``'s command with ``--task FILE``: the positional names the system (a registered one
    or an MJCF path) the task file runs on."""

    def run(args: argparse.Namespace) -> int:
        if args.task_file:
            from envs.tasks import get_task

            args.task = get_task(args.task_file, system=args.task)
        return cmd_plan(args)

    return run


def register(sub) -> None:
    s = sub.add_parser("tasks", help="list the shipped task files (tasks as data), show or check one")
    s.add_argument("--show", metavar="NAME", help="print a shipped task (or a task file) as YAML")
    s.add_argument("--check", metavar="FILE", help="load a task file and check every name against its system")
    s.add_argument("--system", help="with --check: the system (name or MJCF) to check it against")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_tasks)
    plan = sub.choices.get("plan")
    if plan is not None:  # plan SYSTEM --task FILE: the task file on a registered system or an MJCF
        plan.add_argument("--task", dest="task_file", metavar="FILE",
                          help="a task file (see `gndesign tasks`); the positional then names the system "
                               "(registered or an MJCF path) it runs on")
        plan.set_defaults(func=_plan_with_task_file(plan.get_default("func")))
