"""A job that does nothing: the baseline of bench/speed_to_patient.py's job throughput.

Queued on the service's own queue with a send job's options (one int argument, result_ttl 0),
it costs a `telephony worker` what RQ itself costs per job (dequeue, bookkeeping, the
registries) and nothing else. The worker imports it by name, so the benchmark starts its
worker with the repository on PYTHONPATH.
"""

from __future__ import annotations


def noop(number: int) -> None:
    return None
