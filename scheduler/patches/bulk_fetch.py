"""A topic's fetched records handed over as lists, and committed by a watermark.

Upstream: every record a fetch call brings becomes a Faust message, is
passed through the conductor to each channel of its topic, is decoded into
an event and queued, and is taken off the queue by the stream's iterator,
one turn of the event loop each; each is then acknowledged on its own, and
a commit works out the consecutive run of acknowledged offsets. That
machinery alone costs a record more than most of the command path's own
steps (``bench/floor.py``; bench/RESULTS.md, Registration).

Ours: a topic given to :func:`divert` skips all of it. The records of its
partitions that a fetch call brings are taken out of the call's result
before Faust sees them, and handed, as aiokafka's list for the partition,
to the topic's sink, together with the consumer generation current when
the fetch returned (as Faust stamps its own messages). Only records fetched
as the worker stops are dropped (read again from the committed offset by
whoever owns the partition next). Every other record a fetch brings is
handed over, and the sink holds it until the flow runs and no rebalance or
recovery does, and drops it if its generation is no longer current: the
generation, not Faust's set of active partitions, says whether the
partition is still ours. Upstream drops two kinds of records, and for each
the position has already passed them:

- records fetched while the flow is stopped; upstream then seeks back to
  the committed offset, but that seek does nothing for a partition with no
  commit yet (aiokafka's ``seek_to_committed``): a command fetched during
  a recovery, after the new assignment had set its position, was never read
  (a 404 in ``tests/integration/test_web_tokens.py``);
- records of a partition not in the set of active partitions when the
  fetch returns. Faust changes that set in place while the consumer's
  thread fetches with it: a new assignment makes every partition active,
  then pauses the stream partitions until its recovery ends
  (``App._on_partitions_assigned``), and aiokafka reads an empty set as
  "every assigned partition". So a fetch under way brings records of a
  partition that is paused by the time it returns: the first command of a
  partition was lost (``tests/integration/test_list_paging.py``, now and
  then; the dropped record was seen in a worker's log, with ``active=[]``).
  aiokafka hands back records only of partitions assigned to this
  consumer, and the generation they are stamped with changes only after
  a revocation has run, so a kept record is never one of another owner's.

(For the topics left to Faust, ``scheduler.patches.consumer`` (3) makes the
seek back cover a partition with no commit as well; it leaves diverted
topics alone, since nothing of theirs is dropped.)

A partition with a commit is read again from it after a rebalance or at
the end of a recovery, so some records may come twice; a command applied
twice leaves the same schedule (a rejection or a re-keyed copy may be sent
twice).

The sink's owner processes the records in offset order and then calls
:func:`done` with the next offset to read; a commit takes that offset for
the partition (no further than Faust would for a partition of its own,
``_should_commit``). Nothing is committed for a partition before
:func:`done`, and :func:`forget` drops the watermark of a partition that
moved, so its next owner starts from what was committed.

Why: the command path (``scheduler.streams.bulk``) handles a whole fetch at
once, in a few microseconds of Python a command; the executor
(``scheduler.streams.executor``) takes ``firings`` the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from faust.transport.consumer import Consumer, ThreadDelegateConsumer

REPLACES = (
    "faust.transport.consumer:ThreadDelegateConsumer._getmany",
    "faust.transport.consumer:Consumer._filter_committable_offsets",
)
USES = (
    "faust.transport.consumer:Consumer._acked",
    "faust.transport.consumer:Consumer._should_commit",
)

#: Called with a partition, its fetched records (offset order) and their generation.
Sink = Callable[[Any, list[Any], int], None]

_sinks: dict[str, Sink] = {}
#: Diverted topics whose partitions Faust's seek back still treats as its own.
_sought: set[str] = set()
#: Per partition, the next offset to read once all before it were processed.
_done: dict[Any, int] = {}

_getmany = ThreadDelegateConsumer._getmany


def divert(topic: str, sink: Sink, *, sought_back: bool = False) -> None:
    """Hand every fetched record of ``topic`` to ``sink`` instead of Faust's streams.

    ``sought_back``: Faust's seek back after a rebalance sends a partition of
    the topic with no commit to its start, as it does its streams' (see
    :func:`left_alone`); the sink then skips what it was handed already.
    """
    _sinks[topic] = sink
    if sought_back:
        _sought.add(topic)


def diverted(topic: str) -> bool:
    """Whether :func:`divert` takes ``topic``'s records away from Faust."""
    return topic in _sinks


def left_alone(topic: str) -> bool:
    """Whether Faust's seek back leaves a partition of ``topic`` with no commit where it is
    (``scheduler.patches.consumer``, (3)): a diverted topic, unless sought back."""
    return topic in _sinks and topic not in _sought


def done(consumer: Any, tp: Any, next_offset: int) -> None:
    """Every record of ``tp`` before ``next_offset`` is processed and may be committed."""
    if next_offset > _done.get(tp, -1):
        _done[tp] = next_offset
        consumer._acked.setdefault(tp, [])  # a commit looks only at partitions in there


def forget(tps: Iterable[Any]) -> None:
    """Drop the watermarks of partitions that moved: their next owner commits them."""
    for tp in tps:
        _done.pop(tp, None)


async def _getmany_diverting(self: Any, active_partitions: Any, timeout: float) -> Any:
    records: Any = await _getmany(self, active_partitions=active_partitions, timeout=timeout)
    if records and _sinks:
        # The generation the records belong to is the one current when the
        # fetch returns, as for Faust's own (``Consumer.getmany``): a fetch that
        # waited through a rebalance brings records from the new positions.
        generation = self.app.consumer_generation_id
        # A stopped flow, or a partition paused meanwhile, too: see the module's docstring.
        hand_on = not self.should_stop
        for tp in [tp for tp in records if tp.topic in _sinks]:
            taken = records.pop(tp)
            if hand_on:
                _sinks[tp.topic](tp, taken, generation)
    return records


_filter_committable_offsets = Consumer._filter_committable_offsets


def _filter_committable_with_watermarks(self: Any, tps: Iterable[Any]) -> dict[Any, int]:
    tps = list(tps)
    offsets: dict[Any, int] = _filter_committable_offsets(self, tps)
    for tp in tps:
        offset = _done.get(tp)
        if offset is not None and self._should_commit(tp, offset):
            offsets[tp] = offset
    return offsets


def install() -> None:
    global _filter_committable_offsets
    if Consumer._filter_committable_offsets is _filter_committable_with_watermarks:
        return  # installed already: wrapping ours again would call itself
    # After ``commit_floor``, whose rule stays in force for every other partition.
    _filter_committable_offsets = Consumer._filter_committable_offsets
    ThreadDelegateConsumer._getmany = _getmany_diverting  # type: ignore[method-assign]
    Consumer._filter_committable_offsets = _filter_committable_with_watermarks  # type: ignore[method-assign]
