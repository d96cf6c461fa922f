"""Schedules and SQS event sources: the payloads AWS sends and the Lambda poller's delete rules."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from devstack.events import (
    EventSources,
    SqsPoller,
    receipts_to_delete,
    schedule_interval,
    scheduled_event,
    sqs_event,
)
from devstack.lambdas import load_handler_module
from devstack.model import Schedule, SqsEventSource
from devstack.naming import StackContext
from devstack.provision import AwsClients, provision
from devstack.template import Template
from tests.support.events import sqs_message

CONTEXT = StackContext()


def _schedule(**changes: Any) -> Schedule:
    schedule = Schedule(
        function_id="Fn",
        event_name="Tick",
        expression="rate(5 minutes)",
        interval_seconds=300,
        input=None,
        source="aws.events",
        resource_arn="arn:aws:events:us-east-1:123456789012:rule/flowgate-local-FnTick",
        enabled=True,
    )
    return dataclasses.replace(schedule, **changes)


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_scheduled_event_shape() -> None:
    now = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    event = scheduled_event(_schedule(), CONTEXT, now)
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/flowgate-local-FnTick"]
    assert (event["account"], event["region"], event["time"]) == (
        "123456789012",
        "us-east-1",
        "2026-05-06T07:08:09Z",
    )
    assert (event["version"], event["detail"]) == ("0", {})
    assert scheduled_event(_schedule(source="aws.scheduler"), CONTEXT)["detail"] == "{}"
    assert scheduled_event(_schedule(input='{"a": 1}'), CONTEXT) == {"a": 1}


def test_schedule_interval() -> None:
    assert schedule_interval(_schedule(), None) == 300
    assert schedule_interval(_schedule(), 2) == 2
    assert schedule_interval(_schedule(interval_seconds=None), None) is None
    assert schedule_interval(_schedule(interval_seconds=None), 3) == 3


def test_schedules_fire_at_the_local_floor() -> None:
    # Given a daily schedule and FLOWGATE_LOCAL_SCHEDULE_SECONDS=0.05
    fired: list[Any] = []
    sources = EventSources(lambda function_id, event: fired.append((function_id, event)), CONTEXT)
    sources.start_schedules(
        [_schedule(interval_seconds=86400), _schedule(event_name="Off", enabled=False)], 0.05
    )
    try:
        # Then it fires repeatedly, with the Scheduled Event payload; the disabled one never does
        assert _wait_for(lambda: len(fired) >= 2)
    finally:
        sources.stop()
    assert {function_id for function_id, _ in fired} == {"Fn"}
    assert all(event["resources"][0].endswith("FnTick") for _, event in fired)


def test_cron_without_a_floor_is_reported_not_fired(caplog: pytest.LogCaptureFixture) -> None:
    sources = EventSources(lambda function_id, event: pytest.fail("fired"), CONTEXT)
    sources.start_schedules([_schedule(expression="cron(0 1 * * ? *)", interval_seconds=None)], None)
    sources.stop()
    assert "FLOWGATE_LOCAL_SCHEDULE_SECONDS" in caplog.text


RECORDS = sqs_event(
    [sqs_message("{}", message_id=f"m{i}", receipt_handle=f"h{i}") for i in range(3)],
    "arn:aws:sqs:us-east-1:123456789012:flowgate-local-WorkQueue",
    "us-east-1",
)["Records"]


@pytest.mark.parametrize(
    ("result", "report", "deleted"),
    [
        (None, False, ["h0", "h1", "h2"]),
        ({"batchItemFailures": [{"itemIdentifier": "m1"}]}, False, ["h0", "h1", "h2"]),
        ({"batchItemFailures": [{"itemIdentifier": "m1"}]}, True, ["h0", "h2"]),
        ({"batchItemFailures": []}, True, ["h0", "h1", "h2"]),
        (None, True, ["h0", "h1", "h2"]),
        ({"batchItemFailures": [{"itemIdentifier": "elsewhere"}]}, True, []),
        ({"batchItemFailures": [{}]}, True, []),
    ],
)
def test_receipts_to_delete_follow_lambda(result: Any, report: bool, deleted: list[str]) -> None:
    assert receipts_to_delete(RECORDS, result, report) == deleted


class TestSqsPoller:
    """The fixture worker behind a poller, against moto: partial failures, whole failures, redrive.

    The handler runs in this process (under moto's in-process mock): what is tested is the poller's
    side; a stack's pollers invoke the same workers as its routes (test_devstack_cli).
    """

    @pytest.fixture(autouse=True)
    def stack(
        self, aws: None, fixture_layer: None, fixture_template: Template, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clients = AwsClients.from_session(boto3.session.Session(region_name="us-east-1"))
        physical = provision(fixture_template, clients)
        monkeypatch.setenv("TABLE_NAME", physical["Table"].ref)
        worker = next(f for f in fixture_template.functions() if f.logical_id == "WorkerFunction")
        (source,) = worker.sqs_sources
        self.sqs = clients.sqs
        self.queue_url = physical["WorkQueue"].ref
        self.dlq_url = physical["WorkDeadLetterQueue"].ref
        self.invocations: list[dict[str, Any]] = []
        module = load_handler_module(worker, f"devstack_test_worker_{uuid.uuid4().hex[:8]}")
        monkeypatch.delitem(sys.modules, module.__name__)

        def invoke(function_id: str, event: Any) -> Any:
            assert function_id == "WorkerFunction"
            self.invocations.append(event)
            return module.handler(json.loads(json.dumps(event)), None)

        self.poller = SqsPoller(
            source,
            client=clients.sqs,
            queue_url=self.queue_url,
            queue_arn=physical["WorkQueue"].attributes["Arn"],
            invoke=invoke,
            region="us-east-1",
        )

    def _send(self, *bodies: dict[str, Any]) -> None:
        for body in bodies:
            self.sqs.send_message(
                QueueUrl=self.queue_url,
                MessageBody=json.dumps(body),
                MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}},
            )

    def _left(self, url: str) -> list[dict[str, Any]]:
        messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]

    def test_a_failed_item_stays_and_the_others_are_deleted(self) -> None:
        self._send({"id": "a"}, {"id": "b", "fail": True}, {"id": "c"})
        self.poller.poll_once()
        assert self._left(self.queue_url) == [{"id": "b", "fail": True}]
        ((record, *_),) = [event["Records"] for event in self.invocations]
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"].endswith(":flowgate-local-WorkQueue")
        assert record["awsRegion"] == "us-east-1"
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert record["messageAttributes"]["kind"] == {
            "stringValue": "test",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
        assert {"messageId", "receiptHandle", "body", "md5OfBody"} <= record.keys()

    def test_a_raising_handler_deletes_nothing(self) -> None:
        self._send({"id": "a"}, {"raise": True})
        self.poller.poll_once()
        assert sorted(json.dumps(body) for body in self._left(self.queue_url)) == [
            '{"id": "a"}',
            '{"raise": true}',
        ]

    def test_a_message_that_keeps_failing_goes_to_the_dead_letter_queue(self) -> None:
        # maxReceiveCount is 2 and the visibility timeout 0: two failed deliveries, then the DLQ
        self._send({"id": "x", "fail": True})
        for _ in range(3):
            self.poller.poll_once()
        assert len(self.invocations) == 2
        assert self._left(self.dlq_url) == [{"id": "x", "fail": True}]


def test_pollers_back_off_on_sqs_errors_and_stop_promptly() -> None:
    # Given a poller whose SQS calls fail (as when moto is stopping)
    calls = threading.Semaphore(0)

    class UnreachableSqs:
        def receive_message(self, **kwargs: Any) -> Any:
            calls.release()
            raise ConnectionError("moto is gone")

    sources = EventSources(lambda function_id, event: pytest.fail("invoked"), CONTEXT)
    source = SqsEventSource("Fn", "Work", "Q", batch_size=10, report_batch_item_failures=False, enabled=True)
    sources.start_sqs_poller(source, UnreachableSqs(), "http://q", "arn:q")  # type: ignore[arg-type]
    assert calls.acquire(timeout=10)
    # When the sources stop, the poller's back-off does not hold them up
    started = time.monotonic()
    sources.stop()
    assert time.monotonic() - started < 2
