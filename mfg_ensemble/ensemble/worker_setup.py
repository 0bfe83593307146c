"""Set-up of the default LocalCluster's worker processes (a Dask preload, run as each starts).

A terminal's Ctrl-C goes to the whole process group; the client process handles it (it cancels
the members, keeps the store consistent and says how to resume), so the workers ignore SIGINT
instead of each printing a KeyboardInterrupt traceback. They are stopped by the cluster.
"""

from __future__ import annotations

import signal
from typing import Any


def dask_setup(worker: Any) -> None:
    """Ignore SIGINT in this worker process (Dask calls this in the process's main thread)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
