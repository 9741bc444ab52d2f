"""The drills' webhook receiver (``HttpSink``) misbehaves as asked: 500, hang, reset, hold.
Fast (no Airflow): runs in ``make test-fast`` too."""

from __future__ import annotations

import threading

import httpx
import pytest

from airflow_escalation.demo.sinks import HttpSink


@pytest.fixture
def sink():
    receiver = HttpSink()
    yield receiver
    receiver.stop()


def post(sink: HttpSink, body: dict, timeout: float = 5) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{sink.port}/hook%20path", json=body, timeout=timeout)


def test_faults_are_answered_as_a_broken_receiver_would(sink):
    assert post(sink, {"n": 1}).status_code == 200
    sink.fault = "error"
    assert post(sink, {"n": 2}).status_code == 500
    sink.fault = "reset"
    with pytest.raises(httpx.TransportError):
        post(sink, {"n": 3})
    sink.fault = "hang"
    with pytest.raises(httpx.ReadTimeout):
        post(sink, {"n": 4}, timeout=0.5)
    sink.fault = None
    assert post(sink, {"n": 5}).status_code == 200
    assert sink.requests == [("/hook path", {"n": 1}), ("/hook path", {"n": 5})]
    assert [(body["n"], outcome) for _, body, outcome, _ in sink.attempts] == [
        (1, "ok"),
        (2, "error"),
        (3, "reset"),
        (4, "hang"),
        (5, "ok"),
    ]


def test_a_held_request_is_accepted_and_answered_once_released(sink):
    sink.hold.clear()
    answers = []
    sender = threading.Thread(target=lambda: answers.append(post(sink, {"n": 1}).status_code))
    sender.start()
    sender.join(1.0)
    assert sender.is_alive() and sink.requests == [("/hook path", {"n": 1})] and not answers
    sink.hold.set()
    sender.join(5)
    assert answers == [200]
