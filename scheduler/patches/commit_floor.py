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

Why: firings are acknowledged when they are delivered, at their instant,
not in offset order; a firing held for its instant sat unacknowledged at
the committed offset while later ones were delivered and acknowledged, the
commit passed it, and a worker killed before its instant lost it for good
(seen as one missing instant in the fault suite's one-kill run). The more
often offsets are committed (``scheduler.app.COMMIT_INTERVAL_S``), the
likelier that was.
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer

REPLACES = ("faust.transport.consumer:Consumer._filter_committable_offsets",)
USES = (
    "faust.transport.consumer:Consumer._new_offset",
    "faust.transport.consumer:Consumer._should_commit",
    "faust.transport.consumer:Consumer._unacked_messages",
    "faust.transport.consumer:Consumer._acked",
)

_new_offset = Consumer._new_offset
#: Upstream's, kept for the test that shows what it does.
upstream = Consumer._filter_committable_offsets


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
    lowest = floors(self._unacked_messages, self.app.consumer_generation_id)
    commit_offsets = {}
    for tp in tps:
        offset = below_floor(self, tp, lowest.get(tp))
        if offset is not None and self._should_commit(tp, offset):
            commit_offsets[tp] = offset
    return commit_offsets


def install() -> None:
    Consumer._filter_committable_offsets = _filter_committable_offsets  # type: ignore[method-assign]
