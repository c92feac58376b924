"""Keep the server's native heap from growing under threaded load (issue 14, "bounded memory").

glibc gives a thread that finds the main heap busy an arena of its own, up to eight per core. Request handlers
run on anyio's pool of up to 40 threads, so a server under steady ingest and reads spread its allocations over
a dozen arenas, each keeping its freed pages: measured with `python -m bench.load`, RSS rose 44 MB in a minute
with no Python object kept (tracemalloc saw under 1 MB). Two arenas hold that growth flat at no measured cost
in latency. A `MALLOC_ARENA_MAX` already in the environment wins: glibc read it at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("ganscope.server")
M_ARENA_MAX = -8  # from glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; True when the cap was set. Must run before request threads start."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt: nothing to cap
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_ARENA_MAX, arenas) == 1
    if not ok:
        log.warning("could not cap malloc arenas at %d; memory may grow under threaded load", arenas)
    return ok
