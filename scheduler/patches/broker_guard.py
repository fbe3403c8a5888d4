"""The egress policy for the brokers a command-named Kafka cluster advertises.

A command's ``connection.host`` is only the bootstrap list; the cluster then
tells the client where its brokers are, and aiokafka connects there. A
sender who runs something that answers Kafka's metadata request could
advertise the cloud metadata address as a broker. So every broker connection
of such a producer is checked like any other target: its advertised name is
resolved, each address judged, and the connection made to a checked address
(the command-named clusters carry no TLS, so an address serves as well as the
name). aiokafka has no hook for this; its client asks ``_get_conn`` for every
broker connection (metadata, producer id, produce requests) and that asks the
cluster metadata for the broker's address, so both are wrapped on the one
client (nothing global is changed).

A broker that is denied is not connected to: ``_get_conn`` answers None, as
aiokafka's own does for a broker it cannot reach, and :attr:`BrokerGuard.denied`
says why. The producer's start waits on it (:meth:`BrokerGuard.wait_denied`),
so a cluster that advertises a denied broker fails its deliveries for good
with ``egress_denied`` instead of timing out.

Upstream: aiokafka connects to whatever broker address the cluster's
metadata names. Ours: for a producer of a command-named cluster, each broker
address is judged by the egress policy first and connected to at a checked
address. Why: a command must not be able to make a worker connect where
the operator denied it (``docs/design.md``, "Production and security").
Nothing is installed globally: :class:`BrokerGuard` wraps one client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.client import ConnectionGroup

from scheduler.targets.egress import EgressDenied, Policy, resolve

log = logging.getLogger(__name__)

REPLACES = ()  # per client, not on the class: see BrokerGuard
USES = (
    "aiokafka.client:AIOKafkaClient._get_conn",
    "aiokafka.client:AIOKafkaClient._conns",
    "aiokafka.cluster:ClusterMetadata.broker_metadata",
)


def install() -> None:
    """Nothing to install: a guard is put on each client that needs one."""


class BrokerGuard:
    def __init__(self, client: Any, policy: Policy) -> None:
        self.policy = policy
        #: Why a broker of this cluster was refused (the first one), if any was.
        self.denied: str | None = None
        self._denial = asyncio.Event()
        #: node id -> (advertised host, port, checked address)
        self._pins: dict[Any, tuple[str, int, str]] = {}
        self._get_conn = client._get_conn
        self._broker_metadata = client.cluster.broker_metadata
        self._conns = client._conns
        client._get_conn = self.get_conn
        client.cluster.broker_metadata = self.broker_metadata

    def broker_metadata(self, node_id: Any) -> Any:
        """The broker at the address its check pinned; None (no such broker, to
        aiokafka) while its current address has not been checked."""
        broker = self._broker_metadata(node_id)
        if broker is None:
            return None
        pin = self._pins.get(node_id)
        if pin is None or pin[:2] != (broker.host, broker.port):
            return None  # fail closed: the metadata moved it since the last check
        return broker._replace(host=pin[2])

    async def get_conn(self, node_id: Any, **kwargs: Any) -> Any:
        conn_id = (node_id, kwargs.get("group", ConnectionGroup.DEFAULT))
        broker = self._broker_metadata(node_id)
        existing = self._conns.get(conn_id)
        # Checked again for every new connection, a reconnection included:
        # the cluster may advertise the broker somewhere else by then.
        if broker is not None and (existing is None or not existing.connected()):
            try:
                addresses = await resolve(broker.host, broker.port, self.policy)
                if not addresses:
                    raise EgressDenied(f"{broker.host} resolves to no address")
            except (EgressDenied, OSError) as exc:
                # A name that cannot be resolved now is not connected to either:
                # aiokafka would resolve it again itself, unchecked.
                self._pins.pop(node_id, None)
                if isinstance(exc, EgressDenied) and self.denied is None:
                    self.denied = (
                        f"broker {node_id} advertised at {broker.host}:{broker.port}: {exc}"
                    )
                    log.warning("Kafka target: %s", self.denied)
                    self._denial.set()
                return None
            self._pins[node_id] = (broker.host, broker.port, addresses[0])
        return await self._get_conn(node_id, **kwargs)

    async def wait_denied(self) -> str:
        await self._denial.wait()
        assert self.denied is not None
        return self.denied
