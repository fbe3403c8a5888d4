"""Benchmarks of the scheduler service against APScheduler 3 and rq-scheduler.

``python -m bench.run`` runs every workload and writes ``bench/RESULTS.md``.
"""
