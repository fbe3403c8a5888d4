"""No offset is committed past a record that is still unacknowledged.

Upstream: Faust commits, per partition, the end of the first run of
consecutive acknowledged offsets (``Consumer._new_offset``). It refuses only
when that run starts more than one past the last committed offset, so a
single unacknowledged record right at the committed offset is skipped: with
``31`` committed (the next record to read), ``31`` unacknowledged and
``32, 33`` acknowledged, it commits ``34``. Nothing is checked at all while
a partition has no committed offset yet (or has ``0``).

Ours: before a commit, the lowest offset per partition of the records the
streams took and have not acknowledged yet (Faust's ``unacked`` set) is a
floor: the commit stops there, and the acknowledged offsets above it are
kept for a later commit. The upstream rule still applies below the floor
(its one-offset slack covers a control record, which no stream takes).

The consumer's set of unacknowledged records is a :class:`Tracked` set,
which also keeps, per partition, a heap of the records added to it
(:class:`Floors`): a commit reads each partition's floor off its heap
instead of walking every unacknowledged record. A burst holds up to
100,000 firings unacknowledged until their instant, and the walk, at every
commit (two a second), was a visible share of a worker's main thread while
it fired one (the figures are in the commit that made this so, a559776).
It is the set's ``add`` that
feeds the heaps, not ``Consumer.track_message``: Faust's streams (and our
``batching``) add to the set directly. A consumer with a plain set (a unit
test's) is walked as before.

Why: firings are acknowledged when they are delivered, at their instant,
not in offset order; a firing held for its instant sat unacknowledged at
the committed offset while later ones were delivered and acknowledged, the
commit passed it, and a worker killed before its instant lost it for good
(seen as one missing instant in the fault suite's one-kill run). The more
often offsets are committed (``scheduler.app.COMMIT_INTERVAL_S``), the
likelier that was.
"""

from __future__ import annotations

import heapq
import itertools
import weakref
from typing import Any

from faust.transport.consumer import Consumer

REPLACES = (
    "faust.transport.consumer:Consumer._filter_committable_offsets",
    "faust.transport.consumer:Consumer.__init__",
)
USES = (
    "faust.transport.consumer:Consumer._new_offset",
    "faust.transport.consumer:Consumer._should_commit",
    "faust.transport.consumer:Consumer._unacked_messages",
    "faust.transport.consumer:Consumer._acked",
)

_new_offset = Consumer._new_offset
#: Upstream's, kept for the test that shows what it does.
upstream = Consumer._filter_committable_offsets
#: Upstream's ``Consumer.__init__`` as :func:`install` found it.
_init: Any = None


def floors(unacked: Any, generation: int) -> dict[Any, int]:
    """Per partition, the lowest offset among the taken and unacknowledged records.

    Only records of the current ``generation`` count: one taken before the
    last rebalance (a delivery still running across it) is read again and
    taken anew if its partition is still ours, and must not hold back the
    partition's commits until it ends.
    """
    lowest: dict[Any, int] = {}
    for message in list(unacked):
        if message.acked or message.generation_id != generation:
            continue
        tp, offset = message.tp, message.offset
        known = lowest.get(tp)
        if known is None or offset < known:
            lowest[tp] = offset
    return lowest


#: A partition's heap is rebuilt from its live entries once it holds more than
#: this, or twice what was live at its last rebuild: entries of records
#: acknowledged above the floor stay until they reach the top, and a record
#: held long (a firing for a far instant) would let them pile up.
COMPACT_MIN = 4_096


class Floors:
    """Per partition, a heap of the records taken: ``(offset, order, weak reference)``.

    :meth:`lowest` is :func:`floors` of the same records. An entry leaves the
    top when its record is acknowledged, gone (a record nobody holds any
    more is in no unacknowledged set either) or of an earlier generation; a
    record of a later generation than asked for stays, and counts, which
    can only hold a commit back. Should the generation ever go back (aiokafka
    resets it to -1 when a heartbeat fails mid-rebalance), a record popped
    as earlier is still not lost: the rebalance seeks every partition back
    to its commit, and the record, read again, is added anew.
    """

    def __init__(self) -> None:
        self._heaps: dict[Any, list[tuple[int, int, Any]]] = {}
        self._rebuild_at: dict[Any, int] = {}
        self._order = itertools.count()

    def track(self, message: Any) -> None:
        tp = message.tp
        heap = self._heaps.get(tp)
        if heap is None:
            heap = self._heaps[tp] = []
        heapq.heappush(heap, (message.offset, next(self._order), weakref.ref(message)))
        if len(heap) > self._rebuild_at.get(tp, COMPACT_MIN):
            heap[:] = [entry for entry in heap if _pending(entry[2]())]
            heapq.heapify(heap)
            self._rebuild_at[tp] = max(COMPACT_MIN, 2 * len(heap))

    def lowest(self, generation: int) -> dict[Any, int]:
        found: dict[Any, int] = {}
        for tp, heap in list(self._heaps.items()):
            while heap:
                offset, _, ref = heap[0]
                message = ref()
                if _pending(message) and not _earlier(message.generation_id, generation):
                    found[tp] = offset
                    break
                heapq.heappop(heap)
            if not heap:
                del self._heaps[tp]
                self._rebuild_at.pop(tp, None)
        return found

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())


def _pending(message: Any) -> bool:
    return message is not None and not message.acked


def _earlier(one: int | None, other: int | None) -> bool:
    """Whether generation ``one`` came before ``other`` (an unknown one did)."""
    if one == other:
        return False
    return one is None or (other is not None and one < other)


class Tracked(weakref.WeakSet):  # type: ignore[type-arg]
    """Faust's set of unacknowledged records, whose every record added is also
    in :attr:`floors`. Records leave the set as upstream has them leave it
    (acknowledged, or gone); the heaps drop them as their floors are read.

    Every way into a ``WeakSet`` goes through ``add`` (``update``, ``|=``,
    and the copies its operators make, which call the class with the
    records), except ``^=``, which is refused here.
    """

    def __init__(self, data: Any = None) -> None:
        self.floors = Floors()
        super().__init__(data)

    def add(self, item: Any) -> None:
        super().add(item)
        self.floors.track(item)

    def __ixor__(self, other: Any) -> Tracked:  # type: ignore[misc]
        raise TypeError("a Tracked set takes records through add only")

    def symmetric_difference_update(self, other: Any) -> None:
        raise TypeError("a Tracked set takes records through add only")


def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    self._unacked_messages = Tracked()


def below_floor(consumer: Any, tp: Any, floor: int | None) -> int | None:
    """The offset to commit for ``tp``: upstream's, but never past ``floor``."""
    acked = consumer._acked[tp]
    if floor is None or not acked:
        return _new_offset(consumer, tp)
    # Only what lies below the floor is offered to upstream's rule; the rest
    # waits in the list for a later commit.
    # An acknowledged offset equal to the floor (an older copy of the record is
    # still out) waits too: dropped here, ``ack`` would never add it again.
    above = [offset for offset in acked if offset >= floor]
    if len(above) == len(acked):
        return None
    acked[:] = [offset for offset in acked if offset < floor]
    try:
        offset = _new_offset(consumer, tp)
    finally:
        # Upstream may have filled gaps into the list and removed the run it
        # returned; whatever is left below the floor stays, with the rest.
        acked.extend(above)
        acked.sort()
    if offset is not None and offset > floor:
        # A gap filled by upstream reached past the floor: stop at the floor.
        offset = floor
    return offset


def _filter_committable_offsets(self: Any, tps: Any) -> dict[Any, int]:
    generation = self.app.consumer_generation_id
    unacked = self._unacked_messages
    if isinstance(unacked, Tracked):
        lowest = unacked.floors.lowest(generation)
    else:
        lowest = floors(unacked, generation)
    commit_offsets = {}
    for tp in tps:
        offset = below_floor(self, tp, lowest.get(tp))
        if offset is not None and self._should_commit(tp, offset):
            commit_offsets[tp] = offset
    return commit_offsets


def install() -> None:
    Consumer._filter_committable_offsets = _filter_committable_offsets  # type: ignore[method-assign]
    global _init
    if Consumer.__init__ is __init__:
        return  # installed already: wrapping ours again would call itself
    # Taken now, not at import: a patch installed earlier may have wrapped it.
    _init = Consumer.__init__
    Consumer.__init__ = __init__  # type: ignore[method-assign]
