"""Python's garbage collector, tuned for a worker: fewer, cheaper, paced collections.

:func:`tune` runs once at start. The modules loaded by then (Faust,
aiokafka, pydantic...) are never freed, so ``gc.freeze`` takes them out of
every later collection; and generation 0 is collected every
``GC_THRESHOLD`` allocations rather than 700, since a worker allocates a few
objects per firing that reference counting frees at once.

:func:`pace` is called for each firing taken. CPython starts a young
collection when allocations minus deallocations pass the threshold, and the
deallocation of an old object counts too. A worker holding firings ahead of
their instant frees about as many old objects (firings released) as it
allocates new ones (firings taken), so under a steady load the count hardly
moves: young collections then came seconds apart, each walked every firing
taken since, and deliveries due meanwhile were late by its length. So while
firings flow, generation 0 is collected every ``YOUNG_EVERY_S`` and
generation 1 every ``MIDDLE_EVERY``-th time, each walking a fraction of a
second's objects. Python starts a full collection only from one of its own
young collections, which pacing makes rare: so every ``FULL_EVERY_S`` the
paced collection is a full one, and cyclic garbage that grew old is freed
under a steady load too. An idle worker never calls :func:`pace` and keeps
Python's own schedule. The measurements are in ``bench/RESULTS.md`` (steady
workload) and the commit that added this module.

:func:`trim` runs every ``TRIM_EVERY_S``: if the worker's resident memory
grew by ``TRIM_GROWTH`` since the last time, it hands the C heap's free
pages back to the system (glibc's ``malloc_trim``). A burst (a hundred
thousand retry records moved to their delay tier, a crowd of firings)
leaves its freed buffers inside the process, where its resident memory
keeps them until the next burst; measured with ``python -m bench.retries``
(``bench/results/retries.md``). Only after growth, because the call locks
the heap while it walks it, longer the larger the heap, and an allocation on
the event loop meanwhile waits (measured in the commit that added the
growth check).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import time

#: Allocations between two collections of the youngest generation (Python's: 700).
GC_THRESHOLD = 20_000
#: Seconds between two paced collections of generation 0.
YOUNG_EVERY_S = 0.1
#: Every this many paced young collections, generation 1 is collected instead.
MIDDLE_EVERY = 3
#: Seconds between two paced full collections.
FULL_EVERY_S = 600.0
#: Seconds between two looks at whether to hand the C heap's free pages back.
TRIM_EVERY_S = 30.0
#: Growth of resident memory since the last hand-back that calls for another.
TRIM_GROWTH = 16 * 2**20

_next = 0.0
_young = 0
_full = time.monotonic() + FULL_EVERY_S


def tune() -> None:
    """Freeze what is loaded and raise the young generation's threshold (once, at start)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def pace() -> None:
    """Collect the young generations if their time has come (cheap when it has not)."""
    global _next, _young, _full
    now = time.monotonic()
    if now < _next:
        return
    _next = now + YOUNG_EVERY_S
    _young += 1
    if now >= _full:
        _full = now + FULL_EVERY_S
        gc.collect(2)
    else:
        gc.collect(1 if _young % MIDDLE_EVERY == 0 else 0)


def _malloc_trim() -> object:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_trim = _malloc_trim()


_trimmed_at = 0


def resident() -> int:
    """This process's resident memory in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE")


def trim() -> bool:
    """Give the C heap's free pages back if resident memory grew by ``TRIM_GROWTH``.

    True if it did. ctypes lets go of the GIL for the call, so a caller may
    run it in a thread.
    """
    global _trimmed_at
    if _trim is None or resident() < _trimmed_at + TRIM_GROWTH:
        return False
    _trim(0)  # type: ignore[operator]
    _trimmed_at = resident()
    return True
