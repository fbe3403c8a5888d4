"""Vixie cron's DST rule and the IANA rules past 2037, case by named case.

Expected instants are worked out by hand from each zone's published rules
(not by the library under test): fixed-time jobs (minute and hour fixed)
fire a skipped time when its gap ends and a repeated one once; wildcard jobs
(minute or hour starting with ``*``) run on the clock, skipping what a
spring-forward removes and firing in both passes of a fall-back.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.domain.triggers import TriggerSpec, fire_times

ACCEPTED = datetime(2026, 1, 1, tzinfo=UTC)


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def fires(kind: str, expression: str, zone: str, after: str, count: int) -> list[datetime]:
    spec = TriggerSpec(kind=kind, expression=expression, zone=zone, accepted_at=ACCEPTED)
    return fire_times(spec, z(after), count)


CASES = [
    # --- America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST
    ("ny fixed spring", "30 2 * * *", "America/New_York", "2026-03-07T12:00Z",
     ["2026-03-08T07:00Z", "2026-03-09T06:30Z"]),
    ("ny wildcard spring", "30 * * * *", "America/New_York", "2026-03-08T06:00Z",
     ["2026-03-08T06:30Z", "2026-03-08T07:30Z"]),
    ("ny fixed fall", "30 1 * * *", "America/New_York", "2026-10-31T12:00Z",
     ["2026-11-01T05:30Z", "2026-11-02T06:30Z"]),
    ("ny wildcard fall", "30 * * * *", "America/New_York", "2026-11-01T05:00Z",
     ["2026-11-01T05:30Z", "2026-11-01T06:30Z", "2026-11-01T07:30Z"]),
    ("ny every 15 fall", "*/15 * * * *", "America/New_York", "2026-11-01T05:40Z",
     ["2026-11-01T05:45Z", "2026-11-01T06:00Z", "2026-11-01T06:15Z"]),
    # --- Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET
    ("berlin fixed spring", "30 2 * * *", "Europe/Berlin", "2026-03-28T12:00Z",
     ["2026-03-29T01:00Z", "2026-03-30T00:30Z"]),
    ("berlin wildcard spring", "30 * * * *", "Europe/Berlin", "2026-03-29T00:00Z",
     ["2026-03-29T00:30Z", "2026-03-29T01:30Z"]),
    ("berlin fixed fall", "30 2 * * *", "Europe/Berlin", "2026-10-24T12:00Z",
     ["2026-10-25T00:30Z", "2026-10-26T01:30Z"]),
    ("berlin wildcard fall", "30 * * * *", "Europe/Berlin", "2026-10-25T00:00Z",
     ["2026-10-25T00:30Z", "2026-10-25T01:30Z", "2026-10-25T02:30Z"]),
    ("berlin six fields wildcard fall", "0 30 * * * *", "Europe/Berlin", "2026-10-25T00:00Z",
     ["2026-10-25T00:30Z", "2026-10-25T01:30Z"]),
    # --- Australia/Sydney: 2026-04-05 03:00 AEDT -> 02:00 AEST; 2026-10-04 02:00 AEST -> 03:00
    ("sydney fixed spring", "30 2 * * *", "Australia/Sydney", "2026-10-03T00:00Z",
     ["2026-10-03T16:00Z", "2026-10-04T15:30Z"]),
    ("sydney wildcard spring", "*/30 * * * *", "Australia/Sydney", "2026-10-03T15:00Z",
     ["2026-10-03T15:30Z", "2026-10-03T16:00Z", "2026-10-03T16:30Z"]),
    ("sydney fixed fall", "30 2 * * *", "Australia/Sydney", "2026-04-04T00:00Z",
     ["2026-04-04T15:30Z", "2026-04-05T16:30Z"]),
    ("sydney wildcard fall", "30 * * * *", "Australia/Sydney", "2026-04-04T15:00Z",
     ["2026-04-04T15:30Z", "2026-04-04T16:30Z", "2026-04-04T17:30Z"]),
    # --- Australia/Lord_Howe, half-hour DST: 2026-04-05 02:00 (+11) -> 01:30 (+10:30);
    #     2026-10-04 02:00 (+10:30) -> 02:30 (+11)
    ("lord howe fixed spring", "15 2 * * *", "Australia/Lord_Howe", "2026-10-03T00:00Z",
     ["2026-10-03T15:30Z", "2026-10-04T15:15Z"]),
    ("lord howe wildcard spring", "*/15 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00Z",
     ["2026-10-03T15:15Z", "2026-10-03T15:30Z", "2026-10-03T15:45Z"]),
    ("lord howe fixed fall", "45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00Z",
     ["2026-04-04T14:45Z", "2026-04-05T15:15Z"]),
    ("lord howe wildcard fall", "45 * * * *", "Australia/Lord_Howe", "2026-04-04T14:30Z",
     ["2026-04-04T14:45Z", "2026-04-04T15:15Z", "2026-04-04T16:15Z"]),
    # --- after 2037 (pytz kept the last listed offset: an hour off in summer)
    ("ny summer 2038", "0 9 * * *", "America/New_York", "2038-06-30T14:00Z",
     ["2038-07-01T13:00Z"]),
    ("ny winter 2038", "0 9 * * *", "America/New_York", "2038-12-31T15:00Z",
     ["2039-01-01T14:00Z"]),
    ("berlin summer 2040", "0 9 * * *", "Europe/Berlin", "2040-06-30T12:00Z",
     ["2040-07-01T07:00Z"]),
    ("sydney summer 2050", "0 9 * * *", "Australia/Sydney", "2050-01-14T00:00Z",
     ["2050-01-14T22:00Z"]),
    ("london summer 2099", "0 9 * * *", "Europe/London", "2099-07-01T00:00Z",
     ["2099-07-01T08:00Z"]),
    ("ny fall 2038 fixed", "30 1 * * *", "America/New_York", "2038-11-06T12:00Z",
     ["2038-11-07T05:30Z", "2038-11-08T06:30Z"]),
    ("ny fall 2038 wildcard", "30 * * * *", "America/New_York", "2038-11-07T05:00Z",
     ["2038-11-07T05:30Z", "2038-11-07T06:30Z", "2038-11-07T07:30Z"]),
    ("ny spring 2100 fixed", "30 2 * * *", "America/New_York", "2100-03-13T12:00Z",
     ["2100-03-14T07:00Z", "2100-03-15T06:30Z"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_named_dst_and_far_future_cases(
    expression: str, zone: str, after: str, expected: list[str]
) -> None:
    assert fires("cron", expression, zone, after, len(expected)) == [z(t) for t in expected]


@pytest.mark.parametrize(
    ("date", "zone", "expected"),
    [
        ("2040-07-01T09:00:00", "America/New_York", "2040-07-01T13:00Z"),
        ("2040-01-01T09:00:00", "America/New_York", "2040-01-01T14:00Z"),
        ("2045-03-12T02:30:00", "America/New_York", "2045-03-12T07:00Z"),  # in the gap
        ("2045-11-05T01:30:00", "America/New_York", "2045-11-05T05:30Z"),  # first pass
        ("2060-08-15T12:00:00", "Europe/Paris", "2060-08-15T10:00Z"),
    ],
)
def test_dates_past_2037_follow_the_zone_rules(date: str, zone: str, expected: str) -> None:
    assert fires("date", date, zone, "2026-01-01T00:00Z", 1) == [z(expected)]
