"""The pure domain: what a command means and what a schedule does, with no I/O.

Command models and their validation (``models``, ``errors``), cron and time
zones (``cron``, ``timezones``), triggers that are given an instant and return
the next one (``triggers``), the misfire plan (``misfire``), the schedule
record, its codec and its transitions (``state``), ids (``ids``), the retry
policy and the shape of what a target receives (``retry``), time formatting
(``timefmt``) and previews (``preview``).

Nothing here imports Faust, aiokafka, redis, an HTTP client or asyncio, and
nothing reads the clock: instants are passed in.
``tests/unit/test_layering.py`` checks every module of this folder, and mypy
checks them strictly.
"""
