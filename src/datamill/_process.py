"""Whether a process of this machine is alive: for locks and claims left by a process that died.

Deliberately not here: what a lock or claim is (``io.sinks``, ``pipeline.cache``).
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine (also when it is another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True
