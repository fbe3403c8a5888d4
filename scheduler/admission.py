"""What a worker checks of a valid command before it takes it, beyond its format.

``parse_command`` (``scheduler.domain.models``) judges a command alone; this
judges it against the worker's configuration: a target the egress policy
denies as written (``scheduler.targets.egress``), and a Kafka target cluster
no one configured (``scheduler.targets.clusters``). The command topic and
``POST /commands`` both call :func:`admit`, so they accept and refuse alike.
"""

from __future__ import annotations

from scheduler.app import egress_policy, target_clusters
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Command
from scheduler.targets import egress


def admit(command: Command) -> None:
    """Raise :class:`InvalidCommand` if this worker's configuration refuses ``command``."""
    egress.check_command(command, egress_policy)
    task = command.task
    if task is not None and task.connection.cluster is not None:
        name = task.connection.cluster
        if name not in target_clusters:
            known = ", ".join(sorted(target_clusters)) or "none is configured"
            raise InvalidCommand(
                "unknown_cluster",
                f"task.connection.cluster: no Kafka target cluster {name!r} "
                f"(SCHEDULER_TARGET_CLUSTERS: {known})",
                field="task.connection.cluster",
                value=name,
            )
