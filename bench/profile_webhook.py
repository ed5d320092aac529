"""Where a webhook's time goes under load: py-spy on the real app's gunicorn workers.

    python bench/profile_webhook.py [--target status|incoming] [--duration 10] [--py-spy PATH]

Sets up the same stack as bench/webhook.py (own database, Redis db, the Procfile's gunicorn
line), drives one endpoint with wrk, and samples the workers with py-spy twice: `--gil`
(what holds the interpreter: CPU spent in Python) and `--idle` (every thread, waiting
included: where a request's wall time goes). Prints the top frames by self and inclusive
share and a breakdown by library. py-spy is not a project dependency: install it anywhere
(`pip install py-spy`) and pass --py-spy if it is not on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.webhook import (
    INCOMING_PATH,
    STATUS_PATH,
    Server,
    Store,
    Target,
    cpu_seconds,
    log,
    run_wrk,
    start_stack,
    stop_on_sigterm,
)

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# py-spy names files relative to their sys.path entry: "twilio/request_validator.py",
# "json/encoder.py", "threading.py"; the first component is the top-level package.
OWN = {"telephony_service", "workers", "bench"}


def bucket(frame: str) -> str:
    match = FRAME.match(frame)
    file = match.group("file") if match else frame
    if file.startswith("<frozen"):
        return "stdlib"
    top = file.split("/", 1)[0].removesuffix(".py")
    if top in sys.stdlib_module_names:
        return "stdlib"
    return "telephony_service" if top in OWN else top


def short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    file = match.group("file")
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match.group('func')} ({file})"


def report(raw: Path, title: str, top: int) -> None:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_bucket: Counter[str] = Counter()
    # The library a request is in when it leaves our code: the first non-stdlib frame
    # counted from the leaf, so socket reads under psycopg count as psycopg.
    by_owner: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_time[short(frames[-1])] += count
        by_bucket[bucket(frames[-1])] += count
        owner = next((b for b in map(bucket, reversed(frames)) if b != "stdlib"), "stdlib")
        by_owner[owner] += count
        for frame in set(frames):
            inclusive[short(frame)] += count
    print(f"\n=== {title}: {total} samples ===")
    if not total:
        return
    print("-- self, by package of the leaf frame")
    for name, count in by_bucket.most_common():
        print(f"{100 * count / total:6.1f}%  {name}")
    print("-- self, by first non-stdlib package from the leaf")
    for name, count in by_owner.most_common():
        print(f"{100 * count / total:6.1f}%  {name}")
    print(f"-- top {top} frames by self")
    for frame, count in self_time.most_common(top):
        print(f"{100 * count / total:6.1f}%  {frame}")
    print(f"-- top {top} frames by inclusive")
    for frame, count in inclusive.most_common(top):
        print(f"{100 * count / total:6.1f}%  {frame}")


def process_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every process on the machine, to see who shared the cores."""
    snapshot = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                pid = int(entry.name)
                snapshot[pid] = (cmdline[:70] or entry.name, cpu_seconds(pid))
    return snapshot


def print_process_cpu(before: dict[int, tuple[str, float]], seconds: float) -> None:
    after = process_cpu()
    used = [(cpu - before.get(pid, ("", 0.0))[1], pid, name) for pid, (name, cpu) in after.items()]
    print(f"\n=== CPU by process during the recorded run ({seconds:.1f} s wall, 2 cores) ===")
    for cpu, pid, name in sorted(used, reverse=True)[:15]:
        if cpu > 0.01:
            print(f"{cpu:7.2f} s  {100 * cpu / seconds:5.1f}% of a core  {pid:>7}  {name}")


def record(
    py_spy: str, server: Server, seconds: int, out: Path, mode: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(server.pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "250",
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            str(out),
            f"--{mode}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("status", "incoming"), default="status")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="telephony-profile-"))
    store = Store(db_name=f"telephony_bench_{secrets.token_hex(4)}", redis_db=args.redis_db)
    servers: list[Server] = []
    spies: list[subprocess.Popen[bytes]] = []
    try:
        with stop_on_sigterm():
            stack = start_stack(tmp, store, servers)
            path = STATUS_PATH if args.target == "status" else INCOMING_PATH
            target = Target(args.target, stack.real, path, unique=args.target == "status")
            runs = []
            for mode in ("gil", "idle"):
                # Each recording gets its own load run: py-spy's own start-up is not in it.
                file = stack.factory.write(tmp / f"{mode}.txt", path, 4000 * args.duration)
                wait = args.duration - 2
                spy_out = tmp / f"{mode}.raw"
                spy = record(args.py_spy, stack.real, wait, spy_out, mode)
                spies.append(spy)
                before = process_cpu()
                result = run_wrk(
                    target,
                    file,
                    duration=args.duration,
                    connections=args.connections,
                    threads=1,
                    store=store,
                    measure_cpu=True,
                )
                spy.wait(timeout=60)
                runs.append((mode, spy_out, result))
                if mode == "gil":
                    print_process_cpu(before, result["seconds"])
            for mode, spy_out, result in runs:
                log(
                    f"{mode}: {result['rps']} req/s p50 {result['p50_ms']} ms "
                    f"p99 {result['p99_ms']} ms cpu {result['cpu']}"
                )
                what = "holding the GIL" if mode == "gil" else "all threads, waits included"
                report(spy_out, f"{args.target}, {what}", args.top)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        store.drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
