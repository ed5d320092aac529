"""The agents' callback queue."""

from __future__ import annotations

import secrets
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response as WerkzeugResponse

from telephony_service.services import queue as queue_service
from telephony_service.services.queue import BadQueueFilter, QueueFilters, QueuePage
from telephony_service.web import workspace
from telephony_service.web.workspace import current_practice, db, login_required

bp = Blueprint("queue", __name__)
workspace.install(bp)


def task_url(task_id: int) -> str:
    return url_for("agent.task", task_id=task_id)


def _filters(args: Any) -> QueueFilters:
    try:
        return queue_service.parse_filters(
            {key: args.getlist(key) for key in args}, role=workspace.require_user().role
        )
    except BadQueueFilter as exc:
        abort(400, str(exc))


def _page() -> QueuePage:
    user = workspace.require_user()
    try:
        return queue_service.queue_page(
            db(),
            practice=current_practice(),
            user=user,
            now=workspace.services().clock(),
            filters=_filters(request.args),
            cursor=request.args.get("cursor") or None,
        )
    except BadQueueFilter as exc:
        abort(400, str(exc))


def _next_url(page: QueuePage) -> str | None:
    if page.next_cursor is None:
        return None
    return url_for("queue.queue", cursor=page.next_cursor, **page.filters.query_args())


@bp.get("/")
def index() -> WerkzeugResponse:
    return redirect(url_for("queue.queue"))


@bp.get("/queue")
@login_required()
def queue() -> str:
    page = _page()
    # The refresh asks for exactly this view: the same filters and page.
    query = request.query_string.decode()
    return render_template(
        "workspace/queue.html",
        page=page,
        task_url=task_url,
        next_url=_next_url(page),
        rows_url=url_for("queue.rows") + (f"?{query}" if query else ""),
        # Names this page's press of "Take next": sent twice, it takes one task.
        take_nonce=secrets.token_urlsafe(16),
    )


@bp.get("/queue/rows")
@login_required()
def rows() -> WerkzeugResponse:
    """The table's rows and the header counts, for the page's refresh every few seconds."""
    page = _page()
    html = render_template("workspace/_queue_rows.html", page=page, task_url=task_url)
    return jsonify(
        html=html,
        task_ids=[row.id for row in page.rows],
        counts=page.counts.as_text(),
        next_url=_next_url(page),
        server_now=queue_service.iso_utc(page.now),
    )


@bp.post("/queue/take-next")
@login_required()
def take_next() -> WerkzeugResponse:
    filters = _filters(request.form)
    try:
        task = queue_service.take_next(
            db(),
            practice=current_practice(),
            user=workspace.require_user(),
            now=workspace.services().clock(),
            # Working "my lanes" means taking from them only.
            lanes_only=filters.my_lanes,
            nonce=request.form.get("nonce") or None,
        )
    except BadQueueFilter as exc:
        abort(400, str(exc))
    if task is None:
        flash("Nothing left to take.", "warning")
        return redirect(url_for("queue.queue", **filters.query_args()))
    return redirect(task_url(task.id))
