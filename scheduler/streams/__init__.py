"""The Faust agents and tasks, along the path of a firing.

``accept`` validates commands and routes them to their partition (a bad
one goes to ``rejects``); ``apply``
applies them to the tables (``records``) and, with ``firing``, turns due
instants into firings, all written through one ``batch`` at a time;
``timers`` wakes each owned partition's due instants; ``delivery`` holds
firings until their instant and delivers them, retrying or giving up;
``history`` keeps each schedule's recent events. ``docs/architecture.md``
follows one firing through them.
"""
