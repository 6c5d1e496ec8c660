"""Outbox and Apprise delivery against real receivers: SMTP, a webhook, PagerDuty's API shape."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import apprise.plugins.pagerduty as apprise_pagerduty
import pytest
from polling import until

from alerting.delivery import UNKNOWN_RETRY, AlertmanagerChannel, Channel, Sender
from alerting.outbox import Notification, Outbox
from healthcheck.errors import DeliveryError, StorageError
from healthcheck.secrets import Secret
from storage.database_file import DatabaseFile, clear_the_way
from storage.schema import connect


def note(channel: str, key: str, event: str, notify_type: str = "failure") -> Notification:
    return Notification(
        channel=channel,
        dedup_key=key,
        title=f"[{event.upper()}] {key}",
        body=f"{key} {event}",
        notify_type=notify_type,
        severity="critical",
        event=event,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_email_arrives_with_subject_and_body(smtp, tmp_path) -> None:
    port, mailbox = smtp
    url = Secret(f"mailto://127.0.0.1:{port}?from=hc@example.com&to=ops@example.com&mode=insecure")
    sender = Sender(DatabaseFile(str(tmp_path / "hc.db")), {"email": Channel("email", url)})
    await sender.put([note("email", "endpoint_down:eu/api", "fired")])
    await sender.drain_once()
    assert len(mailbox.messages) == 1
    assert "Subject: [FIRED] endpoint_down:eu/api" in mailbox.messages[0]
    assert "endpoint_down:eu/api fired" in mailbox.messages[0]
    assert sender.stats["email"].sent == 1


async def test_channel_down_then_up_loses_nothing_and_sends_current_state_once(
    webhook, tmp_path
) -> None:
    clock = Clock()
    channel = Channel("slack", Secret(f"json://127.0.0.1:{webhook.port}/hook"))
    sender = Sender(
        DatabaseFile(str(tmp_path / "hc.db")),
        {"slack": channel},
        clock=clock,
        tries_now=1,
        monotonic=clock,
    )
    await sender.put([note("slack", "a", "fired"), note("slack", "b", "fired")])
    await sender.drain_once()  # the receiver is down
    assert sender.stats["slack"].failed == 1 and sender.stats["slack"].sent == 0
    await sender.put([note("slack", "a", "reminder"), note("slack", "a", "resolved", "success")])
    await webhook.up()
    await sender.drain_once()  # not yet: the retry is scheduled later
    assert webhook.received == []
    clock.now += 301
    await sender.drain_once()
    messages = [r["body"]["message"] for r in webhook.received]
    assert sorted(messages) == ["a resolved", "b fired"]  # a's stale fired/reminder superseded
    await sender.drain_once()
    assert len(webhook.received) == 2  # nothing sent twice
    outbox = Outbox(DatabaseFile(str(tmp_path / "hc.db")))
    assert outbox.pending() == {}
    outbox.close()


async def test_a_wall_clock_stepped_back_does_not_silence_a_channel(webhook, tmp_path) -> None:
    """The backoff is monotonic; a stored retry time beyond any backoff is due now."""
    wall, monotonic = Clock(), Clock()
    channel = Channel("slack", Secret(f"json://127.0.0.1:{webhook.port}/hook"))
    sender = Sender(
        DatabaseFile(str(tmp_path / "hc.db")),
        {"slack": channel},
        clock=wall,
        tries_now=1,
        monotonic=monotonic,
    )
    await sender.put([note("slack", "a", "fired")])
    await sender.drain_once()  # the receiver is down: retry in 2 s
    await webhook.up()
    wall.now -= 3600  # the wall clock steps back an hour
    await sender.drain_once()
    assert webhook.received == []  # the backoff still holds
    monotonic.now += 3
    await sender.drain_once()
    assert [r["body"]["message"] for r in webhook.received] == ["a fired"]


async def test_a_restart_resumes_the_outbox(webhook, tmp_path) -> None:
    await webhook.up()
    path = str(tmp_path / "hc.db")
    channel = Channel("hook", Secret(f"json://127.0.0.1:{webhook.port}/x"))
    first = Sender(DatabaseFile(path), {"hook": channel})
    await first.database(
        Outbox.put, [note("hook", "k", "fired")], 0.0
    )  # queued, never sent: "crash"
    second = Sender(DatabaseFile(path), {"hook": channel})
    await second.drain_once()
    assert [r["body"]["message"] for r in webhook.received] == ["k fired"]


async def test_pagerduty_trigger_then_resolve_share_the_dedup_key(
    webhook, tmp_path, monkeypatch
) -> None:
    await webhook.up()
    # Apprise's PagerDuty plugin posts to PagerDuty's Events API; point it at our receiver.
    endpoint = f"http://127.0.0.1:{webhook.port}/v2/enqueue"
    monkeypatch.setitem(apprise_pagerduty.PAGERDUTY_API_LOOKUP, "us", endpoint)
    url = Secret("pagerduty://integrationkey0123@apikey0123/healthcheck")
    sender = Sender(DatabaseFile(str(tmp_path / "hc.db")), {"pd": Channel("pd", url)})
    key = "endpoint_down:eu-west/api"
    await sender.put([note("pd", key, "fired")])
    await sender.drain_once()
    await sender.put([note("pd", key, "reminder")])
    await sender.drain_once()
    await sender.put([note("pd", key, "resolved", "success")])
    await sender.drain_once()
    events = [r["body"] for r in webhook.received]
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "resolve"]
    assert {e["dedup_key"] for e in events} == {key}  # one incident, closed by the resolve
    assert events[0]["routing_key"] == "integrationkey0123"


async def test_one_channel_down_does_not_delay_another(webhook, tmp_path) -> None:
    await webhook.up()
    channels = {
        "down": Channel("down", Secret("json://127.0.0.1:1/never")),
        "up": Channel("up", Secret(f"json://127.0.0.1:{webhook.port}/ok")),
    }
    sender = Sender(DatabaseFile(str(tmp_path / "hc.db")), channels, poll=0.05)
    await sender.put([note("down", "a", "fired"), note("up", "a", "fired")])
    task = asyncio.create_task(sender.run())
    try:
        # A sender that served channels in turn would hold "up" behind "down" for as long as
        # "down" keeps refusing (its backoff grows): a generous deadline still tells the two
        # apart, and a busy machine (Apprise loads on the first delivery) cannot miss it.
        async with asyncio.timeout(30):
            while not webhook.received:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r["path"] for r in webhook.received] == ["/ok"]


async def test_a_slow_receiver_gets_each_notification_once(webhook, tmp_path) -> None:
    """No answer in time: the receiver may have acted on it, so it is not sent again soon."""
    await webhook.up()
    webhook.hang_on.add("a fired")
    clock = Clock()
    path = str(tmp_path / "hc.db")
    channel = Channel("hook", Secret(f"json://127.0.0.1:{webhook.port}/slow"), timeout=2.0)
    sender = Sender(DatabaseFile(path), {"hook": channel}, clock=clock, monotonic=clock)
    await sender.put([note("hook", "a", "fired")])
    await sender.drain_once()  # times out
    await until(lambda: webhook.received)
    for _ in range(5):  # five minutes in which a refused delivery would be tried again and again
        clock.now += 60
        await sender.drain_once()
    assert [r["body"]["message"] for r in webhook.received] == ["a fired"]
    assert sender.stats["hook"].timeouts == 1 and sender.stats["hook"].failed == 0
    outbox = Outbox(DatabaseFile(path))
    assert outbox.pending() == {"hook": 1}  # not given up: it is still owed
    outbox.close()


async def test_an_alertmanager_that_does_not_answer_gets_the_alert_once(webhook, tmp_path) -> None:
    await webhook.up()
    webhook.hang_on.add("/api/v2/alerts")
    clock = Clock()
    url = Secret(f"http://127.0.0.1:{webhook.port}")
    channel = AlertmanagerChannel("am", url, timeout=2.0)
    sender = Sender(
        DatabaseFile(str(tmp_path / "hc.db")), {"am": channel}, clock=clock, monotonic=clock
    )
    await sender.put([note("am", "a", "fired")])
    await sender.drain_once()
    await until(lambda: webhook.received)
    for _ in range(5):
        clock.now += 60
        await sender.drain_once()
    assert [r["path"] for r in webhook.received] == ["/api/v2/alerts"]
    assert sender.stats["am"].timeouts == 1 and sender.stats["am"].failed == 0


async def test_a_delivery_cut_off_by_a_shutdown_is_not_sent_again(webhook, tmp_path) -> None:
    """Cancelled past the daemon's grace while the receiver holds the request: it may have
    arrived, so it is not tried again then, nor at once after the restart, but stays owed."""
    await webhook.up()
    webhook.hang_on.add("a fired")
    clock = Clock()
    path = str(tmp_path / "hc.db")
    channel = Channel("hook", Secret(f"json://127.0.0.1:{webhook.port}/slow"), timeout=300.0)
    sender = Sender(DatabaseFile(path), {"hook": channel}, clock=clock, poll=0.05)
    task = asyncio.create_task(sender.run())
    await sender.put([note("hook", "a", "fired")])
    await until(lambda: webhook.received)
    task.cancel()
    webhook.answer()  # a second try, were one made, would be answered at once
    await asyncio.gather(task, return_exceptions=True)  # run() awaits what it cancelled
    assert [r["body"]["message"] for r in webhook.received] == ["a fired"]
    restarted = Sender(DatabaseFile(path), {"hook": channel}, clock=clock, monotonic=clock)
    await restarted.drain_once()
    assert len(webhook.received) == 1
    outbox = Outbox(DatabaseFile(path))
    assert outbox.pending() == {"hook": 1}
    outbox.close()


async def test_an_unanswered_notification_is_retried_later_even_after_a_restart(
    webhook, tmp_path
) -> None:
    await webhook.up()
    webhook.hang_on.add("a fired")
    clock = Clock()
    path = str(tmp_path / "hc.db")
    url = Secret(f"json://127.0.0.1:{webhook.port}/slow")
    first = Sender(
        DatabaseFile(path),
        {"hook": Channel("hook", url, timeout=2.0)},
        clock=clock,
        monotonic=clock,
    )
    await first.put([note("hook", "a", "fired")])
    await first.drain_once()
    await until(lambda: webhook.received)
    webhook.answer()
    second = Sender(DatabaseFile(path), {"hook": Channel("hook", url, timeout=2.0)}, clock=clock)
    await second.drain_once()  # a restart does not resend it at once either
    assert len(webhook.received) == 1
    clock.now += UNKNOWN_RETRY + 1
    await second.drain_once()
    assert [r["body"]["message"] for r in webhook.received] == ["a fired", "a fired"]
    assert second.stats["hook"].sent == 1
    outbox = Outbox(DatabaseFile(path))
    assert outbox.pending() == {}
    outbox.close()


async def test_a_hung_delivery_does_not_hold_the_next_alert_for_the_same_channel(
    webhook, tmp_path
) -> None:
    await webhook.up()
    webhook.hang_on.add("a fired")
    # The timeout is far longer than the test: the first delivery hangs throughout.
    channel = Channel("hook", Secret(f"json://127.0.0.1:{webhook.port}/slow"), timeout=300.0)
    sender = Sender(
        DatabaseFile(str(tmp_path / "hc.db")), {"hook": channel}, poll=0.05, head_start=0.2
    )
    task = asyncio.create_task(sender.run())
    try:
        await sender.put([note("hook", "a", "fired")])
        await until(lambda: webhook.received)
        await sender.put([note("hook", "b", "fired")])
        await until(lambda: sender.stats["hook"].sent == 1)
        assert [r["body"]["message"] for r in webhook.received] == ["a fired", "b fired"]
        assert sender.stats["hook"].timeouts == 0  # the first one still hangs
    finally:
        webhook.answer()
        sender.stop()
        await asyncio.wait_for(task, 60)
    assert sender.stats["hook"].sent == 2


async def test_a_resolve_waits_for_its_own_alert_still_in_flight(webhook, tmp_path) -> None:
    """Order within one alert holds: PagerDuty must not see the resolve before the trigger."""
    await webhook.up()
    webhook.hang_on.add("a fired")
    channel = Channel("hook", Secret(f"json://127.0.0.1:{webhook.port}/slow"), timeout=300.0)
    sender = Sender(
        DatabaseFile(str(tmp_path / "hc.db")), {"hook": channel}, poll=0.05, head_start=0.2
    )
    task = asyncio.create_task(sender.run())
    try:
        await sender.put([note("hook", "a", "fired")])
        await until(lambda: webhook.received)
        await sender.put([note("hook", "a", "resolved", "success"), note("hook", "b", "fired")])
        await until(lambda: sender.stats["hook"].sent == 1)  # b, not held by a
        assert [r["body"]["message"] for r in webhook.received] == ["a fired", "b fired"]
        webhook.answer()
        await until(lambda: sender.stats["hook"].sent == 3)
        messages = [r["body"]["message"] for r in webhook.received]
        assert messages == ["a fired", "b fired", "a resolved"]
    finally:
        webhook.answer()
        sender.stop()
        await asyncio.wait_for(task, 60)


def test_a_channel_url_apprise_cannot_read_is_refused_without_echoing_it() -> None:
    with pytest.raises(DeliveryError) as caught:
        Channel("slack", Secret("nonsense://token-abcdef"))
    assert "token-abcdef" not in str(caught.value)


async def test_undelivered_notifications_follow_a_database_file_created_anew(
    webhook, tmp_path
) -> None:
    """`rm` of the database with a notification unsent (the receiver down): once the storage
    writer has made a new file, the outbox moves to it with that notification, and sends it."""
    path = str(tmp_path / "hc.db")
    channel = Channel("hook", Secret(f"json://127.0.0.1:{webhook.port}/x"))
    clock = Clock()
    sender = Sender(
        DatabaseFile(path), {"hook": channel}, clock=clock, tries_now=1, monotonic=clock
    )
    await sender.put([note("hook", "k", "fired")])
    await sender.drain_once()  # the receiver is down: kept
    os.remove(path)
    with pytest.raises(StorageError):  # only the writer creates the file anew
        await sender.database(Outbox.pending)
    clear_the_way(path, 0.0, broken=False)  # as the writer does, then creates it
    connect(path).conn.close()
    assert await sender.database(Outbox.pending) == {"hook": 1}
    assert sender.reopened == 1
    await webhook.up()
    clock.now += 301  # past the retry time, which came over with it
    await sender.drain_once()
    assert [r["body"]["message"] for r in webhook.received] == ["k fired"]
    await sender.database(lambda outbox: outbox.close())
    with sqlite3.connect(path) as connection:  # the new file records it as sent
        sent = connection.execute("SELECT COUNT(*) FROM outbox WHERE sent IS NOT NULL")
        assert sent.fetchone()[0] == 1
