"""Identifiers that every worker computes the same way.

A schedule id is derived from the five client fields, so re-sending a
command with the same client tuple addresses the same schedule on any
worker, and a producer can key its record without asking us. A firing id
is derived from the schedule id and the nominal instant, so a firing that
is emitted twice (after a crash or a rebalance) carries the same id and a
target can drop the copy.

Form: ``sch_`` followed by the first 32 hex digits of the SHA-256 of the
compact JSON array ``[operation, application, group, key, type]``; a firing
id is ``fir_`` and 32 hex digits of the SHA-256 of
``<schedule id>|<instant as UTC ISO-8601 with microseconds>``. JSON keeps
field boundaries unambiguous (no separator can be smuggled into a field),
and the hex form is safe in a URL path, a header and a Redis key.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from datetime import datetime

from scheduler.domain.timefmt import format_utc

#: ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``, without
#: building a new encoder on every call as ``json.dumps`` does for those options.
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


#: What ``compact_json`` escapes in a string: the quote, the backslash and
#: the control characters (nothing else, with ``ensure_ascii=False``).
_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def schedule_id(operation: str, application: str, group: str, key: str, type_: str) -> str:
    if _ESCAPED.search(operation + application + group + key + type_) is None:
        # The same text ``compact_json`` writes, without its encoder: most client
        # fields hold nothing it would escape, and every command asks for its id.
        canonical = f'["{operation}","{application}","{group}","{key}","{type_}"]'
    else:
        canonical = compact_json([operation, application, group, key, type_])
    return "sch_" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def firing_id(schedule: str, scheduled_for: datetime) -> str:
    material = f"{schedule}|{format_utc(scheduled_for, micros=True)}"
    return "fir_" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def trigger_firing_id(schedule: str, accepted_at: datetime) -> str:
    """The id of a ``trigger`` firing: its own namespace, never a nominal instant's."""
    return firing_id(schedule + "!trigger", accepted_at)


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
#: The length of a schedule id ("sch_" and 32 hex digits), and its 4-byte words' reader.
_ID_LENGTH = 36
_ID_WORDS = struct.Struct(f"<{_ID_LENGTH // 4}I").unpack


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java's ``Utils.murmur2``), as aiokafka's ``murmur2`` computes it.

    The same arithmetic, with the 4-byte words read in one ``struct`` call
    and fewer masks: aiokafka's byte-at-a-time loop is a noticeable share of a
    worker's time registering commands (measured in bench/), for a 36-byte id.

    Not the compiled ``murmurhash2`` package, though it is fifteen times as
    fast alone: it lets go of the GIL on every call, and in a worker the
    consumer's thread then takes it, which cost the command path more than
    the whole hash (measured in the commit that kept this one).
    """
    length = len(data)
    h = 0x9747B28C ^ length
    whole = length // 4
    # A schedule id's words are read with a struct made once (the common case),
    # any other key's with one looked up by its format.
    words = _ID_WORDS(data) if length == _ID_LENGTH else struct.unpack_from(f"<{whole}I", data)
    for k in words:
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        end = whole * 4
        if tail >= 3:
            h ^= data[end + 2] << 16
        if tail >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)
