"""A child process that ends with its parent: no API worker serves on without its master."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Asks Linux to send `sig` to this process when its parent exits; False if it cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    # The parent may have died before the call: then nobody would send the signal
    if os.getppid() == 1:
        os.kill(os.getpid(), sig)
    return True
