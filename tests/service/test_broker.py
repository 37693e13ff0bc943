"""The embedded broker: a worker polling the folder while the API writes never reads half a message.

kombu's stock filesystem transport fails this test (the reader sees empty files, raises decode errors and
loses messages); trainserve's transport writes each message under a temporary name and renames it."""

from __future__ import annotations

import multiprocessing
import time

from kombu import Connection, Queue

from service.platform.broker import SCHEME

COUNT = 1000


def connection(folder) -> Connection:
    return Connection(f"{SCHEME}://localhost/", transport_options={
        "data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder / "control"),
        "polling_interval": 0.0})


def consume(folder, results) -> None:
    received, errors = [], []
    with connection(folder) as conn, conn.SimpleQueue(Queue("race", routing_key="race")) as q:
        deadline = time.monotonic() + 60
        while len(received) < COUNT and time.monotonic() < deadline:
            try:
                message = q.get(timeout=10)
            except Exception as exc:  # a half-written file surfaces here as a decode error
                errors.append(repr(exc))
                if "Empty" in repr(exc):
                    break
                continue
            received.append(message.payload["job_id"])
            message.ack()
    results.put((received, errors))


def test_a_reader_in_another_process_gets_every_message_whole(tmp_path):
    (tmp_path / "control").mkdir()
    results = multiprocessing.get_context("fork").Queue()
    reader = multiprocessing.get_context("fork").Process(target=consume, args=(tmp_path, results))
    reader.start()
    with connection(tmp_path) as conn, conn.SimpleQueue(Queue("race", routing_key="race")) as q:
        for i in range(COUNT):
            q.put({"job_id": i, "padding": "x" * 20_000})
    received, errors = results.get(timeout=90)
    reader.join(timeout=10)
    assert not errors, errors[:3]
    assert sorted(received) == list(range(COUNT))
    assert not list(tmp_path.glob(".*.part")), "no temporary file is left behind"
