"""Faust's producer buffer holds more records before a sender waits.

Upstream: changelog records of writes made through a table's dict API
wait in Faust's ``ProducerBuffer``; before it hands a stream its next
record, Faust's conductor waits for that buffer to fall under
``max_messages`` (100), with a warning in the log each time.

Ours: 100,000.

Why: the history table is written through Faust's API, one record per
event, and a burst of events fills 100 at once: every stream then stopped
for a flush and the log filled with warnings. The buffer is still bounded.
"""

from __future__ import annotations

from faust.transport.producer import ProducerBuffer

REPLACES = ("faust.transport.producer:ProducerBuffer.max_messages",)
USES: tuple[str, ...] = ()

MAX_MESSAGES = 100_000


def install() -> None:
    ProducerBuffer.max_messages = MAX_MESSAGES
