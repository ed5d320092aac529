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
# Access log lines would carry query strings; Twilio's parameters are in bodies, so none
# of them reach the log either way.
