"""The embedded broker: trainserve's filesystem transport against kombu's SQLAlchemy transport on an SQLite
file (the same kind of file the embedded database is), measured in one run.

    python -m bench.broker

For each transport:
- latency: a message's time from `put` in one process to its receipt in another, 40 messages 0.1-0.3 s apart,
  both transports polling every 0.05 s (kombu's SQLAlchemy transport hands every transport option to
  `create_engine`, so its polling interval can only be changed in a subclass, as done here; out of the box it
  polls once a second);
- a consumer killed with -9 while it works on a message (received, not yet acknowledged): is the message
  delivered again, or lost?
- a producer killed with -9 while it sends: is any message it was told was sent missing, or half-written?
- two consumers draining one queue at once: is any message delivered twice?
- the app's own small commits on the SQLite file while two idle consumers poll (with the SQLAlchemy
  transport the broker lives in that file and each poll takes its write lock).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import statistics
import tempfile
import time
from pathlib import Path

from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport

from bench.report import write_section
from service.platform.broker import SCHEME

POLL = 0.05


class PollingSQLAlchemyTransport(SQLAlchemyTransport):
    polling_interval = POLL


TRANSPORT_ALIASES["sqla-polling"] = "bench.broker:PollingSQLAlchemyTransport"


def connect(kind: str, folder: Path) -> Connection:
    if kind == "filesystem":
        q = str(folder / "queue")
        return Connection(f"{SCHEME}://localhost/", transport_options={
            "data_folder_in": q, "data_folder_out": q, "control_folder": str(folder / "control"),
            "polling_interval": POLL})
    return Connection(f"sqla-polling+sqlite:///{folder / 'broker.db'}")


def consumer(kind: str, folder: Path, log: str, work_seconds: float, idle_seconds: float) -> None:
    """Take messages, write "start <id> <latency>" when one arrives and "done <id>" once acknowledged."""
    with connect(kind, folder) as conn, conn.SimpleQueue("bench") as q, open(log, "a", buffering=1) as out:
        while True:
            try:
                message = q.get(block=True, timeout=idle_seconds)
            except q.Empty:
                return
            payload = message.payload
            out.write(f"start {payload['id']} {time.time() - payload['sent']:.6f}\n")
            time.sleep(work_seconds)
            message.ack()
            out.write(f"done {payload['id']}\n")


def producer(kind: str, folder: Path, log: str, count: int, gap: tuple[float, float]) -> None:
    with connect(kind, folder) as conn, conn.SimpleQueue("bench") as q, open(log, "a", buffering=1) as out:
        for i in range(count):
            q.put({"id": i, "sent": time.time(), "padding": "x" * 2000})
            out.write(f"sent {i}\n")
            if gap[1]:
                time.sleep(random.uniform(*gap))


def read_log(path: str) -> dict[str, list]:
    events: dict[str, list] = {"start": [], "done": [], "sent": [], "latency": []}
    if not os.path.exists(path):
        return events
    for line in Path(path).read_text().splitlines():
        kind, ident, *rest = line.split()
        events[kind].append(int(ident))
        if kind == "start":
            events["latency"].append(float(rest[0]))
    return events


def spawn(target, *args) -> multiprocessing.Process:
    """Every producer and consumer is a process of its own: kombu keeps declared bindings per process."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process


def latency(kind: str, folder: Path) -> dict:
    log = str(folder / "latency.log")
    c = spawn(consumer, kind, folder, log, 0.0, 3.0)
    time.sleep(1.0)  # the consumer is polling before the first message
    spawn(producer, kind, folder, str(folder / "sent.log"), 40, (0.1, 0.3)).join(60)
    c.join(60)
    ms = sorted(x * 1000 for x in read_log(log)["latency"])
    return {"received": len(ms), "median_ms": statistics.median(ms), "p90_ms": ms[int(0.9 * len(ms))],
            "max_ms": ms[-1]}


def killed_consumer(kind: str, folder: Path) -> dict:
    log = str(folder / "kill-consumer.log")
    spawn(producer, kind, folder, str(folder / "sent.log"), 30, (0, 0)).join(60)
    c = spawn(consumer, kind, folder, log, 0.5, 2.0)  # half a second of "work" per message
    while len(read_log(log)["start"]) < 3:
        time.sleep(0.01)
    os.kill(c.pid, signal.SIGKILL)
    c.join()
    in_hand = set(read_log(log)["start"]) - set(read_log(log)["done"])
    log2 = str(folder / "kill-consumer-after.log")
    spawn(consumer, kind, folder, log2, 0.0, 2.0).join(60)
    after = read_log(log2)
    done = read_log(log)["done"] + after["done"]
    return {"in_hand_when_killed": len(in_hand), "redelivered": len(in_hand & set(after["start"])),
            "lost": len(set(range(30)) - set(done)), "delivered_twice": len(done) - len(set(done))}


def killed_producer(kind: str, folder: Path) -> dict:
    log = str(folder / "kill-producer.log")
    p = spawn(producer, kind, folder, log, 2000, (0, 0))
    while len(read_log(log)["sent"]) < 200:
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    sent = set(read_log(log)["sent"])
    out = str(folder / "kill-producer-drain.log")
    spawn(consumer, kind, folder, out, 0.0, 2.0).join(120)
    got = read_log(out)["done"]
    return {"confirmed_sent": len(sent), "received": len(got), "confirmed_but_missing": len(sent - set(got)),
            "delivered_twice": len(got) - len(set(got))}


def two_consumers(kind: str, folder: Path) -> dict:
    spawn(producer, kind, folder, str(folder / "two-sent.log"), 500, (0, 0)).join(120)
    logs = [str(folder / f"two-{i}.log") for i in range(2)]
    for c in [spawn(consumer, kind, folder, log, 0.0, 2.0) for log in logs]:
        c.join(120)
    done = [i for log in logs for i in read_log(log)["done"]]
    return {"sent": 500, "received": len(done), "lost": len(set(range(500)) - set(done)),
            "delivered_twice": len(done) - len(set(done))}


def app_writes(kind: str, folder: Path) -> dict:
    """The API's and the worker's own small transactions (a heartbeat, an epoch's row) on the database file,
    while two idle consumers poll the broker. With the SQLAlchemy transport the broker is that same file."""
    import sqlite3

    consumers = []
    for i in range(2):  # one after the other: two SQLAlchemy consumers opening a new file at once race to create
        consumers.append(spawn(consumer, kind, folder, str(folder / f"idle-{i}.log"), 0.0, 12.0))  # its tables
        time.sleep(1.5)
    db = sqlite3.connect(folder / "broker.db", timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY, at REAL)")
    ms = []
    for i in range(300):
        start = time.perf_counter()
        db.execute("BEGIN")
        db.execute("INSERT INTO heartbeat (at) VALUES (?)", (time.time(),))
        db.execute("COMMIT")
        ms.append((time.perf_counter() - start) * 1000)
        time.sleep(0.01)
    db.close()
    for c in consumers:
        c.join(30)
    ms.sort()
    return {"median_ms": statistics.median(ms), "p99_ms": ms[int(0.99 * len(ms))], "max_ms": ms[-1]}


def main() -> None:
    results = {}
    for kind in ("filesystem", "sqlalchemy"):
        row = {}
        for name, measure in (("latency", latency), ("killed_consumer", killed_consumer),
                              ("killed_producer", killed_producer), ("two_consumers", two_consumers),
                              ("app_writes", app_writes)):
            folder = Path(tempfile.mkdtemp(prefix=f"broker-{kind}-{name}-"))
            row[name] = measure(kind, folder)
            print(kind, name, json.dumps(row[name]), flush=True)
        results[kind] = row
    lines = ["| | filesystem (trainserve's) | SQLAlchemy on SQLite (kombu's) |", "|---|---|---|"]
    f, s = results["filesystem"], results["sqlalchemy"]
    lines += [
        f"| put to receipt, median / p90 / max | {f['latency']['median_ms']:.0f} / {f['latency']['p90_ms']:.0f} / "
        f"{f['latency']['max_ms']:.0f} ms | {s['latency']['median_ms']:.0f} / {s['latency']['p90_ms']:.0f} / "
        f"{s['latency']['max_ms']:.0f} ms |",
    ]
    for key, label in (("killed_consumer", "consumer killed -9 while working: redelivered / lost / twice"),):
        lines.append(f"| {label} | " + " | ".join(
            f"{r[key]['redelivered']} of {r[key]['in_hand_when_killed']} / {r[key]['lost']} / "
            f"{r[key]['delivered_twice']}" for r in (f, s)) + " |")
    lines.append("| producer killed -9 while sending: confirmed but missing / twice | " + " | ".join(
        f"{r['killed_producer']['confirmed_but_missing']} of {r['killed_producer']['confirmed_sent']} / "
        f"{r['killed_producer']['delivered_twice']}" for r in (f, s)) + " |")
    lines.append("| two consumers, 500 messages: lost / twice | " + " | ".join(
        f"{r['two_consumers']['lost']} / {r['two_consumers']['delivered_twice']}" for r in (f, s)) + " |")
    lines.append("| the app's own commits on the database file while 2 consumers poll: median / p99 / max | " + " | ".join(
        f"{r['app_writes']['median_ms']:.1f} / {r['app_writes']['p99_ms']:.1f} / {r['app_writes']['max_ms']:.1f} ms"
        for r in (f, s)) + " |")
    write_section("broker", "The embedded broker: filesystem against SQLAlchemy on SQLite", "\n".join(lines))


if __name__ == "__main__":
    main()
