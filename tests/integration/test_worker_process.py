"""`telephony worker` as a process: it outlives Redis going away while a job runs."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job, JobStatus


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Redis:
    """A Redis server of this test's own, to stop and start again."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is needed (telephony run uses it too)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _until(lambda: _answers(self.url), "Redis to start")

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)


def _answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_timeout=0.5).ping())
    except RedisError:
        return False


def _until(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[_Redis]:
    server = _Redis(tmp_path)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()


def _redis_stops_under_a_job(redis_server: _Redis) -> None:
    """Redis goes away (a restart, a failover) while a job runs."""
    connection = Redis.from_url(redis_server.url)
    running = Queue("telephony", connection=connection).enqueue("time.sleep", 2)
    _until(lambda: running.get_status(refresh=True) == JobStatus.STARTED, "the job to start")
    redis_server.stop()


def _finished(job_id: str, connection: Redis, worker: subprocess.Popen[bytes]) -> bool:
    if worker.poll() is not None:
        return True  # (the assertion after says what went wrong)
    return bool(Job.fetch(job_id, connection=connection).get_status() == JobStatus.FINISHED)


def test_the_worker_goes_on_after_redis_goes_away_while_a_job_runs(
    database_url: str, redis_server: _Redis, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        REDIS_URL=redis_server.url,
        SECRET_KEY="worker-process-test-secret-0123456789",
        TELEPHONY_INSTANCE_PATH=str(tmp_path),
    )
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-c", "from telephony_service.cli import main; main()", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def restarts() -> int:
        return log_path.read_text().count("starting it again")

    try:
        connection = Redis.from_url(redis_server.url)
        _until(lambda: connection.scard("rq:workers") > 0, "the worker to register")
        for outage in (1, 2):
            _redis_stops_under_a_job(redis_server)
            time.sleep(3)  # the job ends with Redis still away
            redis_server.start()
            connection = Redis.from_url(redis_server.url)
            after = Queue("telephony", connection=connection).enqueue("time.sleep", 0)
            next_job = functools.partial(_finished, after.id, connection, worker)
            _until(next_job, "the next job", timeout=60)
            output = log_path.read_text()
            assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{output}"
            assert restarts() >= outage
        time.sleep(3)  # a dead loop's subscription would have reconnected by now (2 s)
        channels = connection.pubsub_channels("rq:pubsub:*")
        assert len(channels) == 1, f"{channels}: one worker is alive"

        # Stopped while it pauses before starting RQ's loop again: it stops.
        before = restarts()
        _redis_stops_under_a_job(redis_server)
        _until(lambda: restarts() > before, "a pause before a restart")
        worker.terminate()
        worker.wait(15)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(15)
        log.close()
    assert worker.returncode == 0, log_path.read_text()
