"""Deterministic crash injection for the crash tests: ``HKT_KILL_AT=<point>[@<n>]`` makes the process ``SIGKILL``
itself the ``n``-th time (default the first) it reaches ``kill_point(<point>)`` (``$HKT_KILL_SIGNAL``, e.g. ``TERM``,
sends another signal: what a scheduler or ``kill`` sends before ``-9``), so a test can stop a run at an
exact instruction (between epochs, during validation, while ``result.json`` is written, between a trial's ``tell``
and its record, ...) without depending on timing. Unset, a kill point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

_reached: dict[str, int] = {}


def kill_point(name: str) -> None:
    """``SIGKILL`` (or ``$HKT_KILL_SIGNAL``) this process here when ``$HKT_KILL_AT`` is ``name`` or ``name@n`` and this
    is the ``n``-th time."""
    wanted = os.environ.get("HKT_KILL_AT")
    if not wanted or wanted.split("@")[0] != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(wanted.partition("@")[2] or 1):
        os.kill(os.getpid(), signal.Signals[f"SIG{os.environ.get('HKT_KILL_SIGNAL', 'KILL')}"])
