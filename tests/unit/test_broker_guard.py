"""The broker guard's decisions, on a stand-in for aiokafka's client (the real
client against a real broker is in tests/integration/test_egress.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka.structs import BrokerMetadata

from scheduler.patches.broker_guard import BrokerGuard
from scheduler.targets.egress import Policy


class Conn:
    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def connected(self) -> bool:
        return self.alive


class Client:
    """What the guard wraps: ``_get_conn``, ``_conns`` and ``cluster.broker_metadata``."""

    def __init__(self, host: str) -> None:
        self.brokers = {1: BrokerMetadata(1, host, 9092, None)}
        self.cluster = SimpleNamespace(broker_metadata=self.brokers.get)
        self._conns: dict[Any, Any] = {}
        self.connected_to: list[str] = []

    async def _get_conn(self, node_id: Any, **kwargs: Any) -> Any:
        broker = self.cluster.broker_metadata(node_id)  # the guard's, once wrapped
        if broker is None:
            return None
        self.connected_to.append(broker.host)
        conn = self._conns[(node_id, 0)] = Conn(True)
        return conn


async def test_a_broker_moved_to_a_denied_address_is_not_reconnected_to() -> None:
    client = Client("10.1.2.3")
    guard = BrokerGuard(client, Policy.of(None, "169.254.0.0/16"))
    assert await client._get_conn(1) is not None
    assert client.connected_to == ["10.1.2.3"]
    # The connection drops, and the cluster now says the broker is elsewhere.
    client._conns[(1, 0)].alive = False
    client.brokers[1] = BrokerMetadata(1, "169.254.169.254", 9092, None)
    assert await client._get_conn(1) is None
    assert client.connected_to == ["10.1.2.3"]
    assert guard.denied is not None and "169.254.169.254" in guard.denied


async def test_an_address_not_checked_since_the_metadata_changed_is_not_handed_out() -> None:
    client = Client("10.1.2.3")
    BrokerGuard(client, Policy())
    await client._get_conn(1)
    client.brokers[1] = BrokerMetadata(1, "10.9.9.9", 9092, None)
    assert client.cluster.broker_metadata(1) is None  # fail closed until checked again


async def test_a_name_that_does_not_resolve_is_not_connected_to() -> None:
    client = Client("no-such-host.invalid")
    guard = BrokerGuard(client, Policy())
    assert await client._get_conn(1) is None
    assert client.connected_to == [] and guard.denied is None
