"""Interrupted work: SIGTERM handled like Ctrl-C, worker processes that die with their parent.

A long job (dataset generation) cleans up after Ctrl-C because Python raises
:class:`KeyboardInterrupt`; :func:`sigterm_as_interrupt` makes ``kill`` (SIGTERM, what schedulers
and ``timeout`` send) take the same path. A worker process calls :func:`die_with_parent` first, so
that when its parent is killed outright (SIGKILL, which nothing can catch) it does not outlive it
and go on writing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a :class:`KeyboardInterrupt` so that Ctrl-C's cleanup runs for it too."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated("terminated (SIGTERM)")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main
    thread instead of killing the process, so ``finally`` blocks and context managers clean up.

    Only where SIGTERM still has its default action (a program's own handler is left alone) and
    in the main thread (the only one that can set handlers); the previous handler comes back after.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when the thread that started it exits (``prctl``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(1)


def die_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Call first in a worker process started by process ``parent_pid``: the worker is killed as
    soon as its parent dies (Linux: ``PR_SET_PDEATHSIG``; elsewhere a thread that polls the
    parent id every ``interval`` seconds). Exits at once if the parent is already gone."""
    installed = _parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    if not installed:
        threading.Thread(target=_watch_parent, args=(parent_pid, interval), daemon=True,
                         name="die-with-parent").start()
