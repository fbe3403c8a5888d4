"""The Faust application, built once; its topics and tables are declared beside it.

This module imports no agents or views (``scheduler.worker`` does), so any
module can import the topics without pulling in the whole worker. Settings
are fixed before the first import: see ``scheduler.settings.configure``.
Building the app first installs the adjustments of Faust's internals
(``scheduler.patches``), which refuse to run on library versions they were
not written for.
"""

from __future__ import annotations

from datetime import timedelta

import faust

from scheduler import kafka_auth, patches, webauth
from scheduler.patches.monitor import QuietMonitor
from scheduler.patches.supervisor import PatientSupervisor
from scheduler.settings import current
from scheduler.targets import clusters
from scheduler.targets.egress import Policy

patches.install()

settings = current()

#: Where deliveries may connect, and what the edge refuses (scheduler.targets.egress).
egress_policy = Policy.of(settings.egress_allow, settings.egress_deny, own_port=settings.web_port)
#: The Kafka target clusters a command may name (scheduler.targets.clusters).
target_clusters = clusters.load(settings.target_clusters)

#: The most records one fetch call hands over (aiokafka's ``max_poll_records``).
#: With 500, draining a backlog of commands, every fetch call's records became
#: a small batch of their own (``scheduler.streams.bulk``), and the path waited
#: for the next call between them (figures in commit e664e15). 2,000 drained
#: as fast as 1,000 but left the worker's resident memory higher after a
#: backlog of a million (figures in the commit that made this 1,000).
MAX_POLL_RECORDS = 1_000

#: Seconds between offset commits (Faust's default is 2.8). A worker killed
#: with -9 leaves everything it delivered since its last commit to be
#: delivered again by the next owner: about this long of its partitions' firings.
COMMIT_INTERVAL_S = 0.5

app = faust.App(
    settings.app_id,
    broker=settings.faust_broker,
    broker_credentials=kafka_auth.faust_credentials(settings),
    store="rocksdb://",
    datadir=str(settings.data_dir),
    autodiscover=False,
    topic_partitions=settings.partitions,
    # Every topic is created before Faust starts (scheduler.worker.ensure_topics),
    # with SCHEDULER_REPLICATION_FACTOR; this is what Faust would use for one it made.
    topic_replication_factor=max(settings.replication_factor, 1),
    # Only at_least_once: it recovers a table much faster than exactly_once
    # (which waits at each transaction marker), firing ids make a repeated
    # firing harmless, and the agents produce their records outside Faust's
    # transactions (scheduler.outbox).
    processing_guarantee="at_least_once",
    table_standby_replicas=settings.standby_replicas,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=settings.heartbeat_interval,
    consumer_group_instance_id=settings.group_instance_id,
    broker_rebalance_timeout=max(settings.session_timeout, 10.0),
    stream_wait_empty=False,
    broker_commit_interval=COMMIT_INTERVAL_S,
    # At most this many records from one fetch call: a partition paused by a
    # retry tier (scheduler.streams.retries) then stops after these, not after
    # all that one fetch brought (up to consumer_max_fetch_size a partition).
    broker_max_poll_records=MAX_POLL_RECORDS,
    web_enabled=True,
    # Faust's own pages show every table's contents and the partition map: off.
    web_router_enabled=False,
    web_tables_enabled=False,
    web_graph_enabled=False,
    web_stats_enabled=False,
    web_application_options={"middlewares": [webauth.middleware(settings.web_token_list())]},
    web_bind=settings.web_host,
    web_host=settings.web_host if settings.web_host != "0.0.0.0" else "127.0.0.1",
    web_port=settings.web_port,
    canonical_url=settings.web_url,
    producer_acks=-1,
    # aiokafka's 16 KiB default fills a partition's batch after a few dozen
    # schedule records, and the next then waits for the broker's ack.
    producer_max_batch_size=settings.producer_batch_bytes,
    producer_linger=settings.producer_linger_ms / 1000,
    table_cleanup_interval=timedelta(seconds=30).total_seconds(),
    Monitor=QuietMonitor,
    agent_supervisor=PatientSupervisor,
)
