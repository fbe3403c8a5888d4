"""Development and test tools, not needed at run time.

What a developer's machine, the test suite and the benchmarks use around the
service but a deployed worker never does: :mod:`scheduler.devtools.broker`
runs a local Kafka broker for ``scheduler dev``, ``scheduler broker`` and the
tests. Nothing outside this package imports it at module level (the CLI does
so inside those two commands only), and the container image is built without
it.
"""
