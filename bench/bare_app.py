"""The baseline for bench/webhook.py: Flask under the same gunicorn settings, nothing else.

No database, no Redis, no signature check, no form parsing: the two routes answer with the
exact bytes and content type the real webhooks answer with (captured from the real app by
the benchmark and handed over in the file named by BENCH_BARE_RESPONSES), so the ratio
real/bare measures what the service adds on top of HTTP, gunicorn and Flask.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flask import Flask, Response


def create_app() -> Flask:
    captured = json.loads(Path(os.environ["BENCH_BARE_RESPONSES"]).read_text())
    app = Flask(__name__)

    def route(path: str, body: bytes, content_type: str) -> None:
        def view() -> Response:
            return Response(body, content_type=content_type)

        app.add_url_rule(path, endpoint=path, view_func=view, methods=["POST"])

    for entry in captured.values():
        route(entry["path"], entry["body"].encode("utf-8"), entry["content_type"])
    return app
