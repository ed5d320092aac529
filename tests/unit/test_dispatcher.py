"""The dispatcher's hand-off of stored events to RQ, with the queue replaced by a recorder."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import cast

from telephony_service.workqueue import Dispatcher, WorkQueue


class _Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.handed = threading.Event()

    def enqueue_events(self, event_ids: Sequence[int], *, receipt: bool = False) -> bool:
        self.batches.append(list(event_ids))
        self.handed.set()
        return True


def test_it_hands_a_lone_event_over_without_lingering() -> None:
    recorder = _Recorder()
    dispatcher = Dispatcher(cast(WorkQueue, recorder), linger=5.0)
    try:
        dispatcher.submit(1)
        # After a quiet moment nothing waits for company: well inside the 5 s linger.
        assert dispatcher.flush(timeout=1.0)
        assert recorder.batches == [[1]]
    finally:
        dispatcher.close()


def test_it_gathers_events_that_keep_coming_into_one_job() -> None:
    recorder = _Recorder()
    dispatcher = Dispatcher(cast(WorkQueue, recorder), linger=0.3)
    try:
        dispatcher.submit(1)
        assert dispatcher.flush(timeout=1.0)
        # Right after a hand-off (load): the next events wait a moment for each other.
        dispatcher.submit(2)
        dispatcher.submit(3)
        dispatcher.submit(4)
        assert dispatcher.flush(timeout=2.0)
        assert recorder.batches == [[1], [2, 3, 4]]
    finally:
        dispatcher.close()


def test_it_stops_lingering_when_closed() -> None:
    recorder = _Recorder()
    dispatcher = Dispatcher(cast(WorkQueue, recorder), linger=30.0)
    dispatcher.submit(1)
    assert dispatcher.flush(timeout=1.0)
    recorder.handed.clear()
    dispatcher.submit(2)  # lingers: a hand-off just ended
    assert not recorder.handed.wait(0.2)
    dispatcher.close(timeout=0.1)
    # Closing hands it over at once, not 30 s later.
    assert recorder.handed.wait(2.0)
    assert recorder.batches == [[1], [2]]
