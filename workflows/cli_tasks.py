"""``gndesign tasks``: list, show and check task files (``gndesign plan SYSTEM --task FILE`` runs one)."""

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


def register(sub) -> None:
    s = sub.add_parser("tasks", help="list the shipped task files (tasks as data), show or check one")
    s.add_argument("--show", metavar="NAME", help="print a shipped task (or a task file) as YAML")
    s.add_argument("--check", metavar="FILE", help="load a task file and check every name against its system")
    s.add_argument("--system", help="with --check: the system (name or MJCF) to check it against")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_tasks)
