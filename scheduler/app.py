"""The Faust application, its topics and its tables, each declared once.

This module imports no agents or views (``scheduler.worker`` does), so any
module can import the topics without pulling in the whole worker. Settings
are fixed before the first import: see ``scheduler.settings.configure``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import faust
from faust.sensors import Monitor
from mode import OneForOneSupervisor, Service

from scheduler.settings import current

settings = current()


class QuietMonitor(Monitor):
    """Faust's main sensor (its ``Monitor`` setting), without its sampler or per-record counts.

    The sampler turns Faust's counters into rates every second, for Faust's
    ``/stats`` page, which Faust serves only in its debug mode, so never here
    (our figures are in ``/metrics``). It woke an idle worker's loop every
    second. The counts it keeps for each record and event (a dict per event,
    timestamps, per-topic and per-stream tallies) feed the same page and
    Faust's optional ``/performance`` one, off here: they are skipped
    (bench/ floor: 24.6-26.5 -> 22.0-23.4 µs a record). The rest stays:
    Faust's consumer calls into it (end offsets, commits).
    """

    @Service.task
    async def _sampler(self) -> None:
        return None

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


#: How often an agent's supervisor looks for an actor to restart unasked.
SUPERVISOR_LOOK_S = 60.0


class PatientSupervisor(OneForOneSupervisor):
    """The agents' supervisor (mode's one-for-one), with a look once a minute, not every 5 s.

    An actor that crashes wakes its supervisor itself (Faust's
    ``Agent._execute_actor`` calls ``wakeup()``), and is restarted then; the
    timed look is only the fallback for a wake-up that never came. With five
    agents, mode's 5 s woke an idle worker's loop once a second. mode drops a
    wake-up that comes while its supervisor is not waiting (before its first
    wait, or while it restarts another service), and counts on the next
    timed look; here a wake-up is remembered until the supervisor looks.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._asked = False

    def wakeup(self) -> None:
        self._asked = True
        super().wakeup()

    @Service.task
    async def _supervisor(self) -> None:
        while not self.should_stop:
            if not self._asked:
                self._please_wakeup = self.loop.create_future()
                try:
                    await asyncio.wait_for(self._please_wakeup, timeout=SUPERVISOR_LOOK_S)
                except TimeoutError:
                    pass
                finally:
                    self._please_wakeup = None
            self._asked = False
            if self.should_stop:
                break
            services = list(self._services)
            await self.start_services([s for s in services if not s.started])
            await self.restart_services(
                [s for s in services if s.started and not self.service_operational(s)]
            )


app = faust.App(
    settings.app_id,
    broker=settings.faust_broker,
    store="rocksdb://",
    datadir=str(settings.data_dir),
    autodiscover=False,
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    # Only at_least_once: it recovers a table ~30x faster than exactly_once,
    # firing ids make a repeated firing harmless, and the agents produce
    # their records outside Faust's transactions (scheduler.outbox).
    processing_guarantee="at_least_once",
    table_standby_replicas=settings.standby_replicas,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=settings.heartbeat_interval,
    consumer_group_instance_id=settings.group_instance_id,
    broker_rebalance_timeout=max(settings.session_timeout, 10.0),
    stream_wait_empty=False,
    web_enabled=True,
    web_bind=settings.web_host,
    web_host=settings.web_host if settings.web_host != "0.0.0.0" else "127.0.0.1",
    web_port=settings.web_port,
    canonical_url=settings.web_url,
    producer_acks=-1,
    # Measured (bench/): with aiokafka's 16 KiB default a partition's batch
    # fills after ~20 schedule records and the next waits for the broker's
    # ack, which capped a worker near 1,000 events/s with the CPU mostly idle.
    producer_max_batch_size=settings.producer_batch_bytes,
    producer_linger=settings.producer_linger_ms / 1000,
    table_cleanup_interval=timedelta(seconds=30).total_seconds(),
    Monitor=QuietMonitor,
    agent_supervisor=PatientSupervisor,
)

from faust.transport.producer import ProducerBuffer  # noqa: E402

ProducerBuffer.max_messages = 100_000


# Faust builds its aiokafka consumer with fetch_max_wait_ms=1500, hard-coded:
# how long the broker holds a fetch that finds nothing. aiokafka keeps one
# fetch in flight per broker, built over the partitions that were fetchable
# when it left; a partition that becomes fetchable meanwhile (Faust resumed
# it after its stream's buffer drained) waits for that fetch to come back.
# Measured (bench/ steady workload, 2,000 firings/s): with 1.5 s, about a
# third of the runs settled 3-4 s behind with the CPU half idle; with 500 ms
# none did, but an idle worker then spent ~7 millicores in its consumer
# thread, fetching twice a second. So the wait adapts: short while fetches
# bring records (or partitions are paused), long once none has for a while
# with nothing paused. An idle worker fetches every 2 s, and an arriving
# record still ends the long poll at once (the fetch covers every partition).
# (Tried 5 s and a 2 s routine look when idle: idle CPU went from ~4.0 to ~3.5
# millicores, but a restart from an empty data dir took 43 s instead of 30 s
# to be ready, bench/ restart workload, twice each; so not.)
# Idle means no records for IDLE_AFTER_S, not one empty fetch: a worker with
# light traffic (records every second or two) flipped to the long poll
# between them, and a partition resumed meanwhile (after a rebalance, Faust
# resumes the streams' partitions once their tables are recovered) waited
# for that poll: new partitions' firings reached a failover survivor's
# executor ~2 s after it was ready.
IDLE_AFTER_S = 5.0
FETCH_BUSY_WAIT_MS = 100
FETCH_IDLE_WAIT_MS = 2_000
ROUTINE_BUSY_S = 0.2
ROUTINE_IDLE_S = 1.0

from time import monotonic as _monotonic  # noqa: E402

import aiokafka as _aiokafka  # noqa: E402
from faust.transport.drivers import aiokafka as _driver  # noqa: E402


class _Consumer(_aiokafka.AIOKafkaConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = FETCH_BUSY_WAIT_MS
        super().__init__(*args, **kwargs)

    async def start(self) -> None:
        await super().start()
        fetcher = self._fetcher
        fetch = fetcher._proc_fetch_request

        last_records = _monotonic()

        async def fetch_adapting(assignment: Any, node_id: int, request: Any) -> bool:
            nonlocal last_records
            got = bool(await fetch(assignment, node_id, request))
            now = _monotonic()
            if got:
                last_records = now
            paused = fetcher._subscriptions.paused_partitions()
            idle = not paused and now - last_records > IDLE_AFTER_S
            fetcher._fetch_max_wait_ms = FETCH_IDLE_WAIT_MS if idle else FETCH_BUSY_WAIT_MS
            # And how often the fetch routine looks around between events:
            # aiokafka's 200 ms while busy (measured: 1 s throughout made a
            # 10k burst ~1.5 s later), 1 s while idle.
            fetcher._fetcher_timeout = ROUTINE_IDLE_S if idle else ROUTINE_BUSY_S
            return got

        fetcher._proc_fetch_request = fetch_adapting

    async def seek_to_committed(self, *partitions: Any) -> dict[Any, int | None]:
        """aiokafka's, with the committed offsets asked for in one request.

        aiokafka asks the group coordinator once per partition, one after the
        other. Faust seeks every assigned partition (each topic and changelog
        times the partition count, ~100 here) after each rebalance, before the
        worker is ready: 1.2 s of a failover went there (a debug log showed
        the round trips, 7-12 ms each).
        """
        wanted = set(partitions) or self._subscription.assigned_partitions()
        unassigned = wanted - self._subscription.assigned_partitions()
        if unassigned:
            raise _aiokafka.errors.IllegalStateError(f"Partitions {unassigned} are not assigned")
        found = await self._coordinator.fetch_committed_offsets(list(wanted))
        committed: dict[Any, int | None] = {}
        for tp in wanted:
            meta = found.get(tp)
            offset = None if meta is None or meta.offset == -1 else meta.offset
            committed[tp] = offset
            if offset and offset > 0:
                self._fetcher.seek_to(tp, offset)
        return committed


# aiokafka's client fetches metadata for every topic until a send finds a topic
# missing; from then on only for the topics it was asked about (``_topics``),
# and each answer replaces the whole view. A topic first sent to while the
# full view knew it was never added, so the first narrower answer drops it: a
# batch for it already queued then finds no leader and the sender asks for
# metadata again, for the same topics, forever (seen on a fresh broker: a
# worker sent ~900 metadata requests a second and none of its wake-ups or
# firings for 2 minutes, after its changelog topics were created moments
# before the first send to them). So every topic sent to is tracked.
from aiokafka.client import AIOKafkaClient as _AIOKafkaClient  # noqa: E402

_wait_on_metadata = _AIOKafkaClient._wait_on_metadata


async def _wait_on_metadata_tracked(self: Any, topic: str) -> Any:
    if topic not in self._topics and self.cluster.partitions_for_topic(topic) is not None:
        self._topics.add(topic)
    return await _wait_on_metadata(self, topic)


_AIOKafkaClient._wait_on_metadata = _wait_on_metadata_tracked


# aiokafka's ``MessageAccumulator.add_batch`` (behind ``send_batch``) waits for
# the partition's queued batch to leave, again and again while others queue,
# and after each wait takes the time since the *first* wait off what is left:
# the budget shrinks by 1 + 2 + 3 ... waits, so a request timeout of 40 s ran
# out after ~9 s of queueing. In a 100,000 burst to Kafka 2-3% of the
# deliveries failed with KafkaTimeoutError that way (and, with no retry
# policy, went to firings-dead); the outbox's writes take the same path.
# Here the time left is counted from one deadline.
import asyncio as _asyncio  # noqa: E402
import copy as _copy  # noqa: E402

from aiokafka.errors import KafkaTimeoutError as _KafkaTimeoutError  # noqa: E402
from aiokafka.errors import ProducerClosed as _ProducerClosed  # noqa: E402
from aiokafka.producer.message_accumulator import MessageAccumulator as _Accumulator  # noqa: E402


async def _add_batch(self: Any, builder: Any, tp: Any, timeout: float) -> Any:
    if self._closed:
        raise _ProducerClosed()
    if self._exception is not None:
        raise _copy.copy(self._exception)
    deadline = _monotonic() + timeout
    while (left := deadline - _monotonic()) > 0:
        pending = self._batches.get(tp)
        if not pending:
            return _asyncio.shield(self._append_batch(builder, tp).future)
        await pending[-1].wait_drain(timeout=left)
    raise _KafkaTimeoutError()


_Accumulator.add_batch = _add_batch


class _AiokafkaForFaust:
    """aiokafka as Faust's driver sees it: the same, but for its consumer class."""

    def __getattr__(self, name: str) -> Any:
        return _Consumer if name == "AIOKafkaConsumer" else getattr(_aiokafka, name)


_driver.aiokafka = _AiokafkaForFaust()  # type: ignore[attr-defined]


class QuietConsumerThread(_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread without mode's two keepalives.

    mode's ``ServiceThread`` wakes its thread's loop every second
    (``_thread_keepalive``) and, every 1.1 s, wakes it again and runs an
    empty coroutine on the main loop (``_keepalive2``): three wake-ups a
    second of an idle worker. They stand in for calls between the loops
    that would not wake the loop they target; Faust's consumer makes every
    such call through mode's ``MethodQueue``, with ``call_soon_threadsafe``
    both ways, which wakes it. The thread's loop still wakes at least once a
    second for its own work (aiokafka's fetch routine and heartbeat).
    """

    @Service.task
    async def _thread_keepalive(self) -> None:
        return None

    async def _keepalive2(self) -> None:
        return None


def _new_consumer_thread(self: Any) -> QuietConsumerThread:
    return QuietConsumerThread(self, loop=self.loop, beacon=self.beacon)


_driver.Consumer._new_consumer_thread = _new_consumer_thread  # type: ignore[method-assign]


# Faust's consumer hands each fetched record to the streams through
# ``wait_first(on_message(record), suspend_flow.wait())``: four tasks, an
# ``asyncio.wait`` and three cancellations per record, and at least one turn
# of the event loop, so a record at a time reached the agents (measured:
# command batches of one or two records while draining a backlog, ~1,100
# commands/s with the worker's core busy). Delivering a record nearly always
# completes at once (the stream's queue has room), so this runs it inline
# first and falls back to Faust's race only if it really has to wait.
from collections.abc import Coroutine as _Coroutine  # noqa: E402

from faust.transport.consumer import Consumer as _FaustConsumer  # noqa: E402
from mode.services import WaitResults as _WaitResults  # noqa: E402

_ON_MESSAGE = "_compile_message_handler.<locals>.on_message"
_race = _FaustConsumer.wait_first


async def _finish(coro: _Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Drive ``coro`` on from where it suspended on ``waiting``, as a Task would."""
    try:
        while True:
            if waiting is None:
                await _asyncio.sleep(0)
            else:
                await _asyncio.wait([waiting])
            try:
                waiting = coro.send(None)
            except StopIteration as stop:
                return stop.value
    except _asyncio.CancelledError:
        # Cancelled as a Task is: inside the coroutine, so that what it waits
        # for lets go of it (a lock's queue of waiters, say).
        if waiting is not None:
            waiting.cancel()
        try:
            coro.throw(_asyncio.CancelledError())
        except BaseException:
            pass
        else:
            coro.close()
        raise


async def _wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
    first: Any = coros[0] if coros else None
    if (
        len(coros) != 2
        or timeout is not None
        or not getattr(first, "__qualname__", "").endswith(_ON_MESSAGE)
        or self.suspend_flow.is_set()
    ):
        return await _race(self, *coros, timeout=timeout)
    try:
        waiting = first.send(None)
    except StopIteration as stop:
        coros[1].close()
        return _WaitResults([first], [stop.value], False)
    except BaseException:
        coros[1].close()
        raise
    return await _race(self, _finish(first, waiting), coros[1])


_FaustConsumer.wait_first = _wait_first  # type: ignore[method-assign]


# Faust takes a partition out of its fetches while its stream's buffer is
# under pressure and puts it back once the buffer has drained
# (``on_buffer_full`` / ``on_buffer_drop``). Its fetch call (``getmany``, in
# the consumer thread) waits up to 1 s for a fetch that brings records of the
# partitions active when it was made. The records of a partition put back are
# already fetched and waiting, so no fetch brings them and the call sat out
# its second: a worker draining a backlog of 100,000 commands stood still
# for ~1 s after every ~20,000 of them, 4 s of its 13 (measured by timing
# Faust's ``_getmany``). So putting a partition back wakes the waiting call,
# which then takes the partition's records at once.
_on_buffer_drop = _FaustConsumer.on_buffer_drop


def _on_buffer_drop_waking(self: Any, tp: Any) -> None:
    put_back = tp in self._buffered_partitions
    _on_buffer_drop(self, tp)
    if put_back:
        wake_fetch(self)


def wake_fetch(consumer: Any) -> bool:
    """Wake a fetch call of ``consumer`` waiting in its thread; False if there is no thread."""
    thread = getattr(consumer, "_thread", None)
    fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
    loop = getattr(thread, "thread_loop", None)
    if fetcher is None or loop is None or loop.is_closed():
        return False
    loop.call_soon_threadsafe(_wake_waiters, fetcher)
    return True


def _wake_waiters(fetcher: Any) -> None:
    for waiter in list(fetcher._fetch_waiters):
        fetcher._notify(waiter)


_FaustConsumer.on_buffer_drop = _on_buffer_drop_waking  # type: ignore[method-assign]


# Faust checks every assigned partition for a stalled stream every 7 s
# (2.5 commit intervals): the largest share of an idle worker's CPU in a
# profile (bench/ idle workload: 20% of its main thread). The check only logs;
# once a minute still catches a stall.
LIVELOCK_CHECK_S = 60.0
_verify_partitions = _FaustConsumer.verify_all_partitions_active


async def _verify_partitions_rarely(self: Any) -> None:
    now = _monotonic()
    if now - getattr(self, "_scheduler_verified_at", -LIVELOCK_CHECK_S) < LIVELOCK_CHECK_S:
        return
    self._scheduler_verified_at = now
    await _verify_partitions(self)


_FaustConsumer.verify_all_partitions_active = _verify_partitions_rarely  # type: ignore[method-assign]


# Faust's table manager sleeps 1 s when it starts, a grace for tables declared
# late, before it subscribes to their changelogs. Every table here is declared
# when scheduler.tables is imported, before the worker starts, so the second
# only delayed every start (a restart with its data dir took 2.5 s with it).
from faust.tables.manager import TableManager as _TableManager  # noqa: E402


async def _start_tables_at_once(self: Any) -> None:
    if not self.should_stop:
        await self._update_channels()
        await self.recovery.start()


_TableManager.on_start = _start_tables_at_once  # type: ignore[method-assign]

# Changelog recovery reads its queue a batch at a time: scheduler.recovery.
import scheduler.recovery  # noqa: E402,F401
