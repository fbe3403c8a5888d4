"""The executor's path: ``firings`` read a fetch at a time, without Faust's per-record machinery.

Like the command path (``scheduler.streams.bulk``), the records of
``firings`` never become Faust events: each fetch call's records of a
partition are handed over as one list (``scheduler.patches.bulk_fetch``)
and wait in a bounded backlog (``bulk.Backlog``, the same bounds), until
:func:`take_firings` hands each record, in offset order, to
``delivery.take``: held for its instant, started, or applied as a
revocation, as the ``deliver-firings`` agent did (Faust's sensors no
longer count these records).

Why: in a burst of 100,000 one-shots on one worker, Faust's path for each
firing (its message, the conductor, the event, the stream's queue, its
acknowledgement) took about a fifth of the main thread while the crowd was
fired (the figures are in the commit that made this so).

Settling: a firing's record is settled when its delivery is (delivered,
or handed on to the retry or dead topic), or when it is a revocation or
unreadable, and out of offset order, since held firings wait for their
instants. :class:`Unsettled` keeps, per partition, the offsets taken and
not settled yet; a partition's commit goes up to the lowest of them, or
past the last one taken once all are settled (``bulk_fetch.done``). So a
worker that dies loses no held firing, as before: the partition's next
owner reads it again from the commit.

Ownership, as for the commands: a list fetched in an earlier generation is
dropped (read again from the commit), nothing is taken while a rebalance or
its recovery runs (``bulk.flowing``), and a revocation drops the backlog,
ends the batch being handed over and the revoked partitions'
:class:`Unsettled`: a delivery running across it settles nothing, and the
record is read again by the partition's next owner (its held firings are
dropped by ``delivery._drop_held``). Faust's seek back after a rebalance
treats the topic as one of its streams' (``bulk_fetch.divert``'s
``sought_back``); a record handed over already in the same generation is
skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from scheduler import metrics
from scheduler.app import app
from scheduler.patches import bulk_fetch
from scheduler.streams import bulk, delivery
from scheduler.topics import firings_topic, name_of

#: The most records taken off the backlog at once.
TAKE_MAX = 2_000
#: Seconds the path takes records before it gives the event loop a turn
#: (looked at every ``LOOK_EVERY`` records): held firings due meanwhile are
#: released between two such stretches.
TURN_AFTER_S = 0.002
LOOK_EVERY = 32
#: Seconds between two looks at a stopped flow by a task with records waiting.
FLOW_POLL_S = 0.05


class Unsettled:
    """The offsets of one partition taken in one generation and not settled yet."""

    __slots__ = ("_settled", "_taken", "generation", "live", "next_offset", "tp")

    def __init__(self, tp: Any, generation: int) -> None:
        self.tp = tp
        self.generation = generation
        #: False once the partition was revoked: what settles then is read again.
        self.live = True
        self._taken: deque[int] = deque()
        self._settled: set[int] = set()
        #: The offset after the last one taken: a record below it was taken already.
        self.next_offset = -1

    def take(self, offset: int) -> None:
        """A record taken, past the last one (``next_offset``)."""
        self._taken.append(offset)
        self.next_offset = offset + 1

    def settle(self, offset: int) -> None:
        """A record settled; moves the partition's commit if it was the lowest unsettled."""
        taken = self._taken
        if not self.live or not taken or offset < taken[0] or offset > taken[-1]:
            return  # revoked, or settled already, or never taken
        if offset != taken[0]:
            self._settled.add(offset)
            return
        taken.popleft()
        settled = self._settled
        while taken and taken[0] in settled:
            settled.discard(taken.popleft())
        bulk_fetch.done(app.consumer, self.tp, self.floor())

    def floor(self) -> int:
        """The offset a commit may go up to: the lowest unsettled, or the next to read."""
        return self._taken[0] if self._taken else self.next_offset

    def __len__(self) -> int:
        return len(self._taken)


class Fetched:
    """A record of ``firings`` taken by this path: what the executor keeps of it.

    Acknowledged as a Faust message is (``delivery._ack`` calls :meth:`ack`).
    """

    __slots__ = ("_unsettled", "offset", "tp", "value")

    def __init__(self, value: bytes | None, offset: int, tp: Any, unsettled: Unsettled) -> None:
        self.value = value
        self.offset = offset
        self.tp = tp
        self._unsettled = unsettled

    def ack(self, consumer: Any) -> bool:
        """Settle the record. False: ``delivery._ack`` then tells no Faust sensor, as
        for a message other streams still hold (this is no Faust message)."""
        self._unsettled.settle(self.offset)
        return False


backlog = bulk.Backlog()
_unsettled: dict[Any, Unsettled] = {}
delivery.fetched_elsewhere.append(lambda: backlog.count)
metrics.gauge(
    "scheduler_firing_backlog",
    lambda: backlog.count,
    "records of firings fetched and waiting for the executor",
)
metrics.gauge(
    "scheduler_firings_unsettled",
    lambda: sum(len(part) for part in _unsettled.values()),
    "records of firings taken by the executor and not settled yet (held, in delivery)",
)


class _Stop:
    stopping = False


def _taking() -> bool:
    return not _Stop.stopping and bulk.flowing()


# Sought back as Faust's own streams were: a partition with no commit goes to
# its start after a rebalance (what was handed over already is skipped).
bulk_fetch.divert(name_of(firings_topic), backlog.add, sought_back=True)


@app.task  # type: ignore[untyped-decorator]
async def take_firings() -> None:
    """Take records off the backlog and hand them to the executor, until the worker shuts down."""
    while not _Stop.stopping:
        await backlog.ready.wait()
        if not _taking():
            await asyncio.sleep(FLOW_POLL_S)
            continue
        await hand_over(backlog.take(TAKE_MAX))
        backlog.resume_if_low()


class _Revocations:
    #: How many there were: a batch under way when one comes ends there.
    seen = 0


async def hand_over(parts: list[bulk.Part]) -> None:
    """Hand each record of ``parts`` to ``delivery.take``, in offset order per partition.

    A record at an offset handed over already in this generation is skipped:
    the end of a recovery seeks every partition back to its commit, and what
    was fetched before comes again. A revocation meanwhile ends the batch (what
    is left is read again from the commit); a flow stopped otherwise puts what
    is left back at the head of the backlog.
    """
    generation = app.consumer_generation_id
    revocations = _Revocations.seen
    turned = time.monotonic()
    count = 0
    for index, (tp, records, fetched_in) in enumerate(parts):
        if fetched_in != generation:
            continue  # read again from the commit
        unsettled = _unsettled.get(tp)
        if unsettled is None or unsettled.generation != generation:
            if unsettled is not None:
                unsettled.live = False
            unsettled = _unsettled[tp] = Unsettled(tp, generation)
        for position, record in enumerate(records):
            offset = record.offset
            # Below ``next_offset`` is what this generation was handed already
            # (a record of another generation never gets here: it is skipped
            # above, and a new generation starts a new Unsettled).
            if offset < unsettled.next_offset:
                continue
            unsettled.take(offset)
            await delivery.take(record.value, Fetched(record.value, offset, tp, unsettled))
            if _Revocations.seen != revocations:
                return
            count += 1
            if count % LOOK_EVERY == 0 and time.monotonic() - turned >= TURN_AFTER_S:
                await asyncio.sleep(0)
                turned = time.monotonic()
                if _Revocations.seen != revocations:
                    return
                if not _taking():
                    backlog.put_back(
                        [(tp, records[position + 1 :], fetched_in), *parts[index + 1 :]]
                    )
                    return


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    # Records waiting are read again from the commit after the rebalance.
    _Revocations.seen += 1
    backlog.drop()
    for tp in revoked:
        unsettled = _unsettled.pop(tp, None)
        if unsettled is not None:
            unsettled.live = False
    bulk_fetch.forget(revoked)


@app.on_before_shutdown.connect  # type: ignore[arg-type]
async def _on_shutdown(sender: Any, **kwargs: Any) -> None:
    _Stop.stopping = True
    backlog.ready.set()  # wakes the task, which then ends
    backlog.drop()
