"""Keep the server's memory from creeping up under concurrent load (glibc's malloc, Linux).

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and raises its mmap
threshold every time a large block is freed, so the model's large, short-lived buffers (logits of a
whole prompt, KV caches: megabytes each) end up in per-thread heaps that are seldom given back to
the system. Measured with ``bench/load.py --model default --concurrency 2 --users 8 --rounds 1
--waves 4 --max-new-tokens 4`` (the same load four times): the server's RSS at the end of each wave
was 1478, 1588, 1708, 1760 MiB with glibc's defaults; 1264, 1291, 1239, 1247 MiB with two arenas
and a fixed 128 KiB mmap threshold set by the environment (``MALLOC_ARENA_MAX=2
MALLOC_MMAP_THRESHOLD_=131072``); 1243, 1292, 1290, 1275 MiB with the same two set by
``limit_malloc()`` at startup, which ``app.py`` calls first thing (docs/RESULTS.md, "Load"). An
environment that sets either variable itself keeps its own values.
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8          # glibc's <malloc.h>
ARENAS, MMAP_THRESHOLD = 2, 128 * 1024
ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")


def limit_malloc(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Cap glibc's malloc arenas and fix its mmap threshold; False (nothing changed) off glibc or
    when the environment already sets ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_``."""
    if not sys.platform.startswith("linux") or any(v in os.environ for v in ENV):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):             # not glibc (musl, ...): its malloc behaves otherwise
        return False
    ok = mallopt(M_ARENA_MAX, arenas) == 1 and mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    if not ok:
        log.info("mallopt refused the arena / mmap-threshold limits; glibc's defaults stay")
    return ok
