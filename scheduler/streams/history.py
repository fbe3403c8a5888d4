"""The life of schedules that ask for it (``task.history_check``).

Any agent calls ``record`` to append an event to ``schedule-history``; one
agent reads that topic and keeps the recent events of each schedule in the
``history`` table, so the lookup is answered by the owner of the schedule
id's partition, like any table lookup. Events carry their own ``at`` instant
and are shown sorted by it: they come from different agents, possibly on
different workers, so their arrival order is not their order.
"""

from __future__ import annotations

import json
from typing import Any

from scheduler import clock, metrics
from scheduler.app import app
from scheduler.domain.timefmt import format_utc
from scheduler.patches import produce_guard
from scheduler.tables import history
from scheduler.topics import history_topic

#: Events kept per schedule; older ones are still on the topic.
KEEP = 200

_events = metrics.counter("scheduler_history_events_total", "history events recorded")


async def record(schedule_id: str, event: str, **fields: Any) -> None:
    body = {"event": event, "schedule_id": schedule_id, "at": format_utc(clock.now(), micros=True)}
    body.update({name: value for name, value in fields.items() if value is not None})
    sent = await history_topic.send(key=schedule_id.encode(), value=json.dumps(body).encode())
    produce_guard.watch(sent, "a history record", app.consumer)
    _events.inc()


def recent(stored: bytes | None, limit: int) -> list[dict[str, Any]]:
    """Newest first."""
    events: list[dict[str, Any]] = json.loads(stored) if stored else []
    return sorted(events, key=lambda item: item["at"], reverse=True)[:limit]


@app.agent(history_topic, name="keep-history")
async def keep_history(stream: Any) -> Any:
    async for event in stream.events():
        key: bytes = event.key
        stored = history.get(key)
        events = json.loads(stored) if stored else []
        events.append(json.loads(event.value))
        history[key] = json.dumps(events[-KEEP:]).encode()
