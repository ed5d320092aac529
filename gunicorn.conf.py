"""Gunicorn settings for `web` in the Procfile (and the benchmark, which uses the same)."""

from __future__ import annotations

import multiprocessing
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
# Webhook requests spend most of their time waiting on PostgreSQL and Redis, so a few
# threads per process keep the cores busy without a process (and its memory) per request.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
# Importing the app once in the master shares its code pages between workers (less memory
# per worker). Nothing connects at import or in create_app(), so no socket is shared.
preload_app = True
# Twilio waits 15 s for a webhook; a request still running at 30 s is stuck.
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 20000
max_requests_jitter = 2000
accesslog = "-" if os.environ.get("WEB_ACCESS_LOG") else None
# The path without its query string (%(U)s): an API query may carry a phone number.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(D)sus'

# gunicorn's control socket defaults to one path per user, which two services (or the
# benchmark's two servers) on one host would fight over; nothing here uses it.
control_socket_disable = True


def when_ready(server: object) -> None:
    # Objects imported by the preloaded master are never freed; moving them out of the
    # collector's reach keeps a worker's first full collection from touching (and so
    # copying) every page it shares with the master: about 12 MB per worker.
    import gc

    gc.freeze()
