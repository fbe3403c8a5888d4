"""Where a worker may connect on a command's behalf: the egress policy.

A command names its target, so without a policy any sender could make the
workers call the cloud metadata service, a unix socket, or the worker's own
``/commands``. The rules (``SCHEDULER_EGRESS_ALLOW``, ``SCHEDULER_EGRESS_DENY``:
comma lists of CIDRs and host names, ``*.`` wildcards allowed), in order:

1. a target matching a deny rule is denied;
2. with allow rules, a target matching one is allowed, and any other denied;
3. without allow rules, the built-in denials apply (:data:`DENIED_BY_DEFAULT`:
   link-local and cloud metadata addresses, the worker's own web port on
   this host), and everything else, private ranges included, is allowed:
   internal services are what schedules usually call.

Unix sockets are never allowed. A name is checked as written and each
address it resolves to is checked too; the connection then goes to an
address that was checked (:func:`resolve`), so a name cannot be made to
resolve elsewhere between the check and the connection.

At the edge (:func:`refusal`) only what can be judged without a lookup is
refused: an IP literal or a name matching a rule. A name that resolves to a
denied address fails its delivery for good (``egress_denied``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from scheduler.domain.models import redis_url

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Denied unless an allow rule names them.
DENIED_BY_DEFAULT: tuple[Network, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, AWS/GCP/Azure metadata
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
)


class EgressDenied(Exception):
    """A target the policy does not allow; ``str()`` says which rule."""


@dataclass(frozen=True)
class Rule:
    text: str
    network: Network | None = None
    #: A host name, or a suffix for ``*.`` rules (with its leading dot).
    name: str | None = None
    wildcard: bool = False

    @classmethod
    def parse(cls, text: str) -> Rule:
        text = text.strip()
        try:
            return cls(text, network=ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
        name = text.lower().rstrip(".")
        if name.startswith("*."):
            return cls(text, name=name[1:], wildcard=True)
        return cls(text, name=name)

    def matches_name(self, host: str) -> bool:
        if self.name is None:
            return False
        host = host.lower().rstrip(".")
        return host.endswith(self.name) if self.wildcard else host == self.name

    def matches_address(self, address: Address) -> bool:
        return self.network is not None and address in self.network


@dataclass(frozen=True)
class Policy:
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    #: The worker's own web port: denied on this host's addresses.
    own_port: int | None = None
    own_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, allow: str | None, deny: str | None, own_port: int | None = None) -> Policy:
        def rules(text: str | None) -> tuple[Rule, ...]:
            return tuple(Rule.parse(part) for part in (text or "").split(",") if part.strip())

        own = {"localhost", socket.gethostname().lower()}
        # This host's own addresses: its web port there is the worker itself.
        with contextlib.suppress(OSError):
            own.update(socket.gethostbyname_ex(socket.gethostname())[2])
        return cls(rules(allow), rules(deny), own_port, frozenset(own))

    def judge_name(self, host: str, port: int | None) -> str | None:
        """Why ``host`` (as written) is denied, or None if only its addresses can tell."""
        literal = _address(host)
        if literal is not None:
            return self.judge_address(literal, port, host)
        for rule in self.deny:
            if rule.matches_name(host):
                return f"{host} matches SCHEDULER_EGRESS_DENY rule {rule.text}"
        if self.allow and any(rule.matches_name(host) for rule in self.allow):
            return None
        if port is not None and port == self.own_port and host.lower() in self.own_hosts:
            return f"{host}:{port} is this worker's own web port"
        return None

    def named_allowed(self, host: str) -> bool:
        return any(rule.matches_name(host) for rule in self.allow)

    def judge_address(self, address: Address, port: int | None, host: str) -> str | None:
        """Why connecting to ``address`` (which ``host`` resolved to) is denied, or None."""
        address = plain(address)
        shown = host if host == str(address) else f"{host} ({address})"
        for rule in self.deny:
            if rule.matches_address(address):
                return f"{shown} is in SCHEDULER_EGRESS_DENY rule {rule.text}"
        by_address = any(rule.matches_address(address) for rule in self.allow)
        named = _address(host) is None and self.named_allowed(host)
        if self.allow and not by_address and not named:
            return f"{shown} is not in SCHEDULER_EGRESS_ALLOW"
        if by_address:
            return None
        # Only an allow rule naming the address itself opens a default denial:
        # an allowed name may be made to resolve anywhere.
        for network in DENIED_BY_DEFAULT:
            if address in network:
                return (
                    f"{shown} is in {network}, denied unless an address rule in "
                    "SCHEDULER_EGRESS_ALLOW names it"
                )
        own = address.is_loopback or address.is_unspecified or str(address) in self.own_hosts
        if port is not None and port == self.own_port and own:
            return f"{shown}:{port} is this worker's own web port"
        return None


def _address(host: str) -> Address | None:
    try:
        return plain(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


def plain(address: Address) -> Address:
    """The IPv4 address inside an IPv6 one that carries it (``::ffff:a.b.c.d``, 6to4,
    ``::a.b.c.d``), which is where a connection to it really goes: every IPv4 rule
    must apply to it."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and int(address) >> 32 == 0 and int(address) > 1:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # IPv4-compatible
        if inner is not None:
            return inner
    return address


def targets_of(task: dict[str, Any]) -> list[tuple[str, int | None]]:
    """The (host, port) pairs a task would connect to, as written in it."""
    connection = task.get("connection") or {}
    host = str(connection.get("host") or "")
    kind = task.get("type")
    if kind == "kafka":
        out: list[tuple[str, int | None]] = []
        for part in host.split("://", 1)[-1].replace(";", ",").split(","):
            part = part.strip()
            if part:
                name, _, digits = (
                    part.rpartition(":") if part.count(":") == 1 or "]" in part else (part, "", "")
                )
                out.append((name.strip("[]") or part, int(digits) if digits.isdigit() else None))
        return out
    if kind == "redis":
        with contextlib.suppress(ValueError):  # refused by validation: judged as written
            host = redis_url(host)  # host:port as well as a URL: the server it means
    parts = urlsplit(host)
    try:
        written: int | None = parts.port
    except ValueError:
        written = None
    return [(parts.hostname or "", written)]


def check_command(command: Any, policy: Policy) -> None:
    """Refuse a command whose target the policy denies as written (the edge's check)."""
    from scheduler.domain.errors import InvalidCommand

    task = getattr(command, "task", None)
    if task is None:
        return
    reason = judged(policy, str(task.type), task.connection.host)
    if reason is not None:
        raise InvalidCommand(
            "egress_denied",
            f"task.connection.host: {reason}",
            field="task.connection.host",
            value=task.connection.host,
        )


@functools.lru_cache(maxsize=4_096)
def judged(policy: Policy, kind: str, host: str | None) -> str | None:
    """``refusal`` of a task's type and host, remembered: commands of one
    application name the same few targets, and judging one as written (no
    lookup) depends on nothing else: judging each again was a large share of
    a command's CPU (measured in bench/, see the commit that added this)."""
    return refusal({"type": kind, "connection": {"host": host}}, policy)


def refusal(task: dict[str, Any], policy: Policy) -> str | None:
    """Why a command's target is denied as written (no lookup), or None."""
    connection = task.get("connection") or {}
    host = str(connection.get("host") or "")
    if task.get("type") == "redis" and host.lower().startswith("unix:"):
        return "unix sockets are not allowed as targets"
    for name, port in targets_of(task):
        if not name:
            continue
        reason = policy.judge_name(name, port)
        if reason is not None:
            return reason
    return None


async def resolve(host: str, port: int, policy: Policy) -> list[str]:
    """The addresses of ``host`` that the policy allows, to connect to (in resolver order).

    Raises :class:`EgressDenied` if the name or any of its addresses is denied:
    a name whose addresses are partly denied is treated as denied.
    """
    reason = policy.judge_name(host, port)
    if reason is not None:
        raise EgressDenied(reason)
    literal = _address(host)
    if literal is not None:
        # Judged above already; no lookup (asyncio's runs in a thread, one per
        # new connection, which a target that never answers asks for all the time).
        return [host.strip("[]")]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for text in addresses:
        address = _address(text)
        if address is None:
            continue
        reason = policy.judge_address(address, port, host)
        if reason is not None:
            raise EgressDenied(reason)
    return addresses
