"""Young garbage collections paced by the clock while firings flow.

CPython starts a generation-0 collection when allocations minus
deallocations pass the threshold, and the deallocation of an old object
counts as well. A worker holding firings ahead of their instant frees, every
second, about as many old objects (the firings released) as it allocates new
ones (the firings taken), so the count hardly moves: at 2,000 firings a
second, young collections came only every 2-5 s, and each then walked all
that had been taken since, 40,000-115,000 objects still alive, in 25-125 ms
(bench/ steady, one worker, Kafka target). Deliveries due meanwhile were
that late.

:func:`pace` is called for each firing taken; at most every ``YOUNG_EVERY_S``
it collects generation 0, and every ``MIDDLE_EVERY``-th time generation 1,
so each walks only a fraction of a second's objects. Measured with the same
steady run (scratch script around ``bench.ours._steady``): the longest
collection went from 125-240 ms to ~20 ms once started, and the p99 of
deliveries from 118-123 ms to 49 ms (with the slimmer held firings of
``scheduler.streams.delivery.Held``). Collecting generation 1 every second
instead left collections of 30-50 ms, and a p99 of 66-110 ms.

Python starts a full collection only from one of its own young
collections, which pacing makes rare: so every ``FULL_EVERY_S`` of pacing,
the paced collection is a full one, and cyclic garbage that grew old is
freed under a steady load too. Not often: it walks every firing held, and
took 121 ms at 2,000 firings a second. Python's own, with thresholds of 20
and 20, come at most every 400 young collections: 13-33 min at the 2-5 s
between young collections seen before pacing.

An idle worker never calls it and keeps Python's own schedule
(``scheduler.worker.tune_gc``).
"""

from __future__ import annotations

import gc
import time

#: Seconds between two paced collections of generation 0.
YOUNG_EVERY_S = 0.1
#: Every this many paced young collections, generation 1 is collected instead.
MIDDLE_EVERY = 3
#: Seconds between two paced full collections.
FULL_EVERY_S = 600.0

_next = 0.0
_young = 0
_full = time.monotonic() + FULL_EVERY_S


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
