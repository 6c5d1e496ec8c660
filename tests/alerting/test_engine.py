"""The alert engine's loop: one evaluation per tick of its timeline, stamped by its clock."""

from __future__ import annotations

import asyncio
import json

from clock import ManualClock
from polling import until

from alerting.engine import AlertEngine
from alerting.evaluator import ENDPOINT_DOWN
from healthcheck.config import parse_config
from healthcheck.result import ErrorClass, ProbeResult, Status
from storage.database_file import DatabaseFile


async def test_alerts_are_evaluated_once_per_tick_of_the_timeline(tmp_path) -> None:
    config = parse_config(
        json.dumps(
            {
                "alerting": {"rules": {"failure_threshold": 2}},
                "regions": {"eu": {"endpoints": [{"name": "api", "url": "http://x/"}]}},
            }
        ),
        "test",
        {},
    )
    clock = ManualClock()
    engine = AlertEngine(
        config.endpoints(),
        config.alerting,
        DatabaseFile(str(tmp_path / "hc.db")),
        clock,
        tick=5.0,
        timeline=clock,
    )
    task = asyncio.create_task(engine.run())
    try:
        await until(clock.sleeping)  # stored state loaded, waiting for its first tick
        for _ in range(2):
            failed = ProbeResult("eu", "api", "http", False, 0.01, clock(), ErrorClass.TIMEOUT)
            engine.observe(failed, Status.UNHEALTHY)
        await clock.advance(4.9)
        assert engine.firing()["critical"] == 0  # no tick yet: nothing judged
        await clock.advance(0.1)
        assert engine.firing()["critical"] == 1
        state = engine.evaluator.alerts[(ENDPOINT_DOWN, "eu/api")]
        assert state.last_change == clock()  # stamped by the engine's clock, at the tick
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_tick_is_alerting_evaluate_every_and_each_evaluation_is_counted(tmp_path) -> None:
    """`alerting.evaluate_every: 250ms`: an alert due fires at the next quarter second, not the
    next whole one, and `evaluations` (healthcheck_alert_evaluations_total) counts each."""
    config = parse_config(
        json.dumps(
            {
                "alerting": {"evaluate_every": "250ms", "rules": {"failure_threshold": 2}},
                "regions": {"eu": {"endpoints": [{"name": "api", "url": "http://x/"}]}},
            }
        ),
        "test",
        {},
    )
    assert config.alerting.evaluate_every == 0.25
    clock = ManualClock()
    engine = AlertEngine(
        config.endpoints(),
        config.alerting,
        DatabaseFile(str(tmp_path / "hc.db")),
        clock,
        timeline=clock,
    )
    task = asyncio.create_task(engine.run())
    try:
        await until(clock.sleeping)
        await clock.advance(1.0)
        assert engine.evaluations == 4
        for _ in range(2):
            failed = ProbeResult("eu", "api", "http", False, 0.01, clock(), ErrorClass.TIMEOUT)
            engine.observe(failed, Status.UNHEALTHY)
        await clock.advance(0.2)
        assert engine.firing()["critical"] == 0  # between two evaluations: nothing judged
        await clock.advance(0.05)
        assert engine.firing()["critical"] == 1
        assert engine.evaluations == 5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_evaluate_every_defaults_to_one_second() -> None:
    endpoints = '{"eu": {"endpoints": [{"name": "api", "url": "http://x/"}]}}'
    config = parse_config(f'{{"alerting": {{}}, "regions": {endpoints}}}', "test", {})
    assert config.alerting.evaluate_every == 1.0


async def test_a_database_that_refuses_alert_changes_is_logged_once_a_second_not_per_tick(
    tmp_path, caplog
) -> None:
    """At a 100 ms tick the waiting changes are retried at every evaluation, but the warning
    keeps the 1 s tick's pace: 2 lines over 1.5 s of ten evaluations a second, not 15."""
    config = parse_config(
        json.dumps(
            {
                "alerting": {"evaluate_every": "100ms", "rules": {"failure_threshold": 1}},
                "regions": {"eu": {"endpoints": [{"name": "api", "url": "http://x/"}]}},
            }
        ),
        "test",
        {},
    )
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the database would go under a file: it can never be opened
    clock = ManualClock()
    engine = AlertEngine(
        config.endpoints(),
        config.alerting,
        DatabaseFile(str(blocker / "hc.db")),
        clock,
        timeline=clock,
    )
    failed = ProbeResult("eu", "api", "http", False, 0.01, clock(), ErrorClass.TIMEOUT)
    engine.observe(failed, Status.UNHEALTHY)
    caplog.set_level("WARNING", logger="alerting.engine")
    for _ in range(15):
        await engine.evaluate_once()
        await clock.advance(0.1)
    assert engine.firing()["critical"] == 1  # judged, though not saved
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "alert_save_failed"]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert "retrying each evaluation" in warnings[0].getMessage()
