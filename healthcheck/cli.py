"""The `healthcheck` command and its subcommands. Errors map to exit codes here, in one place."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from healthcheck import __version__, event_loop
from healthcheck.config import load_config
from healthcheck.durations import format_duration
from healthcheck.errors import ConfigError, HealthcheckError, StorageError
from healthcheck.logs import setup_logging
from healthcheck.once import check_all
from healthcheck.prober import Prober
from healthcheck.report import Report
from healthcheck.result import ProbeResult
from healthcheck.secrets import Redactor
from healthcheck.targets import Config, Shard

# The daemon, storage, alerting and the demo are imported by the commands that use them:
# check-config and --once load neither sqlite-utils nor Apprise (0.5 s of a 0.9 s start-up).
if TYPE_CHECKING:
    from healthcheck.daemon import Daemon
    from healthcheck.worker_zygote import Zygote

EXIT_CONFIG = 3
EXIT_ERROR = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
SYSTEM_CONFIG = Path("/etc/healthcheck/regions.yaml")
DUPLICATE_SIGNAL_WINDOW = 0.5
# Commands that read stored results or the routing and never use a secret's value: they load
# the configuration with `${VAR}`s not set (an operator need not source the secrets to read
# them). run, --once, test-alert and check-config (whose job is to report it) refuse one.
SECRET_FREE_COMMANDS = frozenset({"status", "routes", "silence"})

log = logging.getLogger("healthcheck.cli")


def default_config_path() -> str:
    """--config, else $HEALTHCHECK_CONFIG, else /etc/healthcheck/regions.yaml, else ./."""
    if "HEALTHCHECK_CONFIG" in os.environ:
        return os.environ["HEALTHCHECK_CONFIG"]
    return str(SYSTEM_CONFIG) if SYSTEM_CONFIG.is_file() else "regions.yaml"


def _common_options(
    parser: argparse.ArgumentParser, suppress: bool, takes_config: bool = True
) -> None:
    """Options accepted before or after the subcommand (argparse needs them on both)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    if takes_config:
        parser.add_argument("-c", "--config", default=default(None), help="configuration file")
    parser.add_argument(
        "--format", choices=("table", "json"), default=default("table"), help="output format"
    )
    parser.add_argument(
        "--region",
        action="append",
        default=default(None),
        help="only this region (repeat for more)",
    )
    parser.add_argument(
        "--shard",
        default=default(None),
        metavar="K/N",
        help="only the endpoints whose id hashes to shard K of N (own database and port)",
    )
    parser.add_argument(
        "--log-level", default=default("INFO"), choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    parser.add_argument(
        "--log-format",
        default=default("auto"),
        choices=("auto", "json", "text"),
        help="auto: JSON lines under systemd, text on a terminal",
    )


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 3, never 2: under cron or CI, 2 must only ever mean unhealthy."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="healthcheck",
        description="Multi-region synthetic health checks. With no subcommand: the daemon.",
    )
    parser.add_argument("--version", action="version", version=f"healthcheck {__version__}")
    parser.add_argument(
        "--once",
        action="store_true",
        help="check every endpoint once, print, exit 0 healthy / 1 degraded / 2 unhealthy "
        "/ 3 configuration or usage error",
    )
    _common_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.add_argument(
        "--record",
        action="store_true",
        help="with --once: also store the results (uptime keeps counting under a timer)",
    )
    for name, help_text in (
        ("run", "run the daemon (the default)"),
        ("check-config", "validate the configuration and print a summary"),
        ("status", "print stored status, uptime and p95 per endpoint (reads the database)"),
        ("test-alert", "send a marked test alert through the route of a severity"),
        ("routes", "show where an alert would be routed (nothing is sent)"),
        ("silence", "add, list or remove silences (alerts recorded but not sent)"),
        ("demo", "run against a simulated fleet on loopback (no config, no network)"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common_options(sub, suppress=True, takes_config=name != "demo")
        if name == "check-config":
            sub.add_argument(
                "config_file", nargs="?", default=None, help="configuration file (as -c FILE)"
            )
        if name == "status":
            sub.add_argument("--db", default=None, help="database file (default: from config)")
        if name == "test-alert":
            sub.add_argument("--severity", choices=("critical", "warning", "info"), required=True)
        if name == "routes":
            actions = sub.add_subparsers(dest="action", required=True, parser_class=_Parser)
            test = actions.add_parser(
                "test",
                help="which route an alert matches and the channels it takes; sends nothing",
            )
            _common_options(test, suppress=True)
            test.add_argument("--endpoint", help="an endpoint of --region (none: a region alert)")
            test.add_argument("--severity", choices=("critical", "warning", "info"), required=True)
            test.add_argument(
                "--rule", help="default endpoint_down (regional_failure without --endpoint)"
            )
        if name == "silence":
            actions = sub.add_subparsers(dest="action", required=True, parser_class=_Parser)
            add = actions.add_parser("add", help="silence matching alerts for a while")
            _common_options(add, suppress=True)
            add.add_argument("--endpoint")
            add.add_argument("--rule", help="e.g. endpoint_down, regional_failure, tls_expiry")
            add.add_argument("--for", dest="duration", required=True, help="e.g. 2h, 30m")
            add.add_argument("--reason", required=True)
            listing = actions.add_parser("list", help="silences from config and the database")
            _common_options(listing, suppress=True)
            remove = actions.add_parser("remove", help="remove a silence added here")
            _common_options(remove, suppress=True)
            remove.add_argument("id", type=int)
        if name == "demo":
            sub.add_argument(
                "--once", action="store_true", default=argparse.SUPPRESS, help="one round, exit"
            )
            sub.add_argument(
                "--duration", type=float, default=None, help="stop after this many seconds"
            )
            sub.add_argument(
                "--refresh", type=float, default=5.0, help="seconds between status tables"
            )
            sub.add_argument(
                "--db",
                default=None,
                help="keep the demo's database in this file (default: a scratch file, removed); "
                "with --once, the round's results are stored in it (as --once --record does)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"healthcheck: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except HealthcheckError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `healthcheck status | head`: the reader left; say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command or ("once" if args.once else "run")
    if args.once and command not in ("once", "demo"):
        raise ConfigError(f"--once checks once and exits; it does not combine with {command!r}")
    if command == "demo" and args.config:
        raise ConfigError("demo runs its own simulated fleet and takes no --config")
    if command == "demo":
        setup_logging(args.log_level, args.log_format)
        # As `run`: the workers' zygote forked before the loop, then the control plane yields
        # to them (the demo's fleet keeps the default scheduler settings).
        zygote = None if args.once else _early_zygote()
        if zygote is not None:
            from healthcheck.targets import SchedulerSettings
            from healthcheck.tuning import yield_to_workers

            yield_to_workers(SchedulerSettings().control_plane_nice)
        return event_loop.run(_demo(args, zygote))
    if getattr(args, "config_file", None):
        if args.config and args.config != args.config_file:
            raise ConfigError(f"two configuration files: {args.config!r} and {args.config_file!r}")
        args.config = args.config_file
    zygote = _early_zygote() if command == "run" and not args.once and not args.record else None
    config = _load(args, allow_unset=command in SECRET_FREE_COMMANDS)
    if command == "check-config":
        # The environment the service gets is checked too: `run` refuses this with exit 3.
        event_loop.loop_factory()
        return _check_config(config, args.format)
    if command == "status":
        return _stored_status(config, args.db, args.format)
    if command in ("test-alert", "silence", "routes"):
        return _alert_command(command, args, config)
    setup_logging(args.log_level, args.log_format, Redactor(config.secrets))
    if command == "once" or args.once:
        return event_loop.run(_once(config, args.format, record=args.record))
    if args.record:
        raise ConfigError("--record goes with --once (the daemon always stores its results)")
    from healthcheck.daemon import Daemon, open_writer
    from healthcheck.front import HttpFront
    from healthcheck.tuning import yield_to_workers
    from healthcheck.worker_zygote import Zygote
    from healthcheck.workers import worker_count

    if worker_count(config.scheduler) == 1 and zygote is not None:
        zygote.discard()  # `scheduler.workers: 1`: the checks run in this process
        zygote = None
    elif worker_count(config.scheduler) > 1 and zygote is None:
        # Forked now, while this process has imported the workers' code and runs no thread:
        # a worker then costs a fork, not an interpreter's start-up (worker_zygote.py).
        zygote = Zygote.fork_here()
    if zygote is not None:
        # This process, the control plane, yields the CPU to the workers (tuning.py).
        yield_to_workers(config.scheduler.control_plane_nice)
    daemon = Daemon(
        config,
        open_writer(config.storage),
        front=HttpFront,
        config_path=config.source,
        regions=set(args.region) if args.region else None,
        shard=_shard(args.shard) if args.shard else None,
        zygote=zygote,
    )
    return event_loop.run(_run_daemon(daemon))


def _early_zygote() -> Zygote | None:
    """The probe workers' zygote, forked before the configuration is loaded when the default
    is more than one worker: forked after, it and every worker held a copy of the whole
    configuration they never use (20,000 endpoints: ~40 MB of RSS in each of them). Forked
    before the daemon's own modules too (storage, the HTTP front, alerting): the zygote and
    each worker counted them in their RSS, ~17 MB each (zygote 53 -> 36 MB), and never ran
    them."""
    from healthcheck.worker_zygote import Zygote
    from healthcheck.workers import default_workers

    return Zygote.fork_here() if default_workers() > 1 else None


def _alert_command(command: str, args: argparse.Namespace, config: Config) -> int:
    """test-alert and silence: the commands that load Apprise and the database."""
    from healthcheck.alert_commands import (
        routes_test,
        silence_add,
        silence_list,
        silence_remove,
        test_alert,
    )
    from healthcheck.daemon import storage_path

    if command == "test-alert":
        setup_logging("ERROR", args.log_format, Redactor(config.secrets))
        return asyncio.run(test_alert(config, args.severity))
    if command == "routes":
        if not args.region or len(args.region) > 1:
            raise ConfigError("routes test takes one --region (the alert's region)")
        return routes_test(
            config, args.region[0], args.endpoint, args.severity, args.rule, args.format
        )
    path = storage_path(config.storage)
    if args.action == "add":
        if args.region and len(args.region) > 1:
            raise ConfigError("silence add takes one --region (add one silence per region)")
        return silence_add(
            config,
            path,
            region=args.region[0] if args.region else None,
            endpoint=args.endpoint,
            rule=args.rule,
            duration=args.duration,
            reason=args.reason,
        )
    if args.action == "list":
        return silence_list(config, path, args.format)
    return silence_remove(path, args.id)


def _load(args: argparse.Namespace, allow_unset: bool = False) -> Config:
    path = args.config or default_config_path()
    if not args.config and not Path(path).exists():
        env = os.environ.get("HEALTHCHECK_CONFIG")
        raise ConfigError(
            "no configuration found: tried --config (not given), $HEALTHCHECK_CONFIG "
            f"({env or 'unset'}), {SYSTEM_CONFIG} and ./regions.yaml; "
            "try `healthcheck demo` for a simulated fleet"
        )
    # Loading builds a million small objects and no cycles: the cyclic collector would only
    # rescan them (10 % of check-config at 100,000 endpoints). The process has nothing else
    # running yet; a reload in the daemon keeps the collector on.
    gc.disable()
    try:
        config = load_config(path, allow_unset=allow_unset)
    finally:
        gc.enable()
    if args.region:
        known = {region.name for region in config.regions}
        unknown = [name for name in args.region if name not in known]
        if unknown:
            raise ConfigError(
                f"--region {unknown[0]!r} is not in the configuration "
                f"(regions: {', '.join(sorted(known))})",
                file=config.source,
            )
        config = config.only_regions(set(args.region))
    if args.shard:
        config = config.only_shard(_shard(args.shard))
    return config


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def _probe_all(config: Config) -> list[ProbeResult]:
    """Every endpoint once, paced by the loop (healthcheck/once.py); checks spoiled by the
    prober's own trouble or lateness are made again, fewer at a time, before anything is judged."""
    from storage.paths import default_path  # push endpoints read their last stored ping

    config.require_environment()  # it probes: every ${VAR} must be set
    database = config.storage.path or default_path()
    async with Prober(Redactor(config.secrets), recheck_lagged=False, database=database) as prober:
        return await check_all(list(config.endpoints()), prober, config.scheduler)


async def _once(config: Config, fmt: str, record: bool = False) -> int:
    report = Report(config, await _probe_all(config))
    _print_report(report, fmt)
    if record:
        from healthcheck.daemon import open_writer

        writer = open_writer(config.storage)
        writer.start()
        for result, status, _ in report.rows:
            writer.submit(result, status)
        await asyncio.to_thread(writer.close)
        if writer.stats.written < len(report.rows):
            raise StorageError(
                f"stored {writer.stats.written} of {len(report.rows)} results in "
                f"{writer.path}: {writer.stats.last_error}"
            )
    return report.exit_code


def _stored_status(config: Config, db: str | None, fmt: str) -> int:
    from healthcheck.daemon import storage_path
    from healthcheck.status_report import StoredStatus
    from storage.uptime import StorageReader

    reader = StorageReader(db or storage_path(config.storage), config.storage.retention_raw)
    try:
        stored = StoredStatus(config, reader, time.time())
    finally:
        reader.close()
    print(stored.render_json() if fmt == "json" else stored.render_table())
    return 0


def _print_report(report: Report, fmt: str) -> None:
    if fmt == "json":
        print(report.render_json())
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        print(report.render_table(colour=colour))
    sys.stdout.flush()


def _check_config(config: Config, fmt: str) -> int:
    endpoints = list(config.endpoints())
    kinds = Counter(endpoint.kind for endpoint in endpoints)
    shortest = min((endpoint.interval for endpoint in endpoints), default=None)
    host, port = config.exporter.host, config.exporter.port
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if fmt == "json":
        summary = {
            "config": config.source,
            "valid": True,
            "regions": {region.name: len(region.endpoints) for region in config.regions},
            "endpoints": len(endpoints),
            "kinds": dict(kinds),
            "shortest_interval_s": shortest,
            "listen": listen,
            "warnings": config.alerting.unrouted(),
        }
        print(json.dumps(summary, indent=2))
        return 0
    kind_text = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    print(
        f"{config.source}: valid: {len(config.regions)} regions, "
        f"{len(endpoints)} endpoints ({kind_text})"
    )
    for region in config.regions:
        names = ", ".join(endpoint.name for endpoint in region.endpoints)
        print(f"  {region.name}: {names}")
    if shortest is not None:
        print(f"shortest interval: {format_duration(shortest)}")
    print(f"metrics, API and status page on http://{listen}/")
    for warning in config.alerting.unrouted():  # valid, but surely not what was meant
        print(f"warning: {warning}", file=sys.stderr)
    return 0


async def _run_daemon(daemon: Daemon, duration: float | None = None) -> int:
    """Run until SIGTERM/SIGINT (a second one exits at once) or for `duration` seconds."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    first_signal: list[float] = []

    def on_signal(signum: int) -> None:
        if first_signal:
            # `timeout`, shells and systemd may signal both the process and its group: the
            # same stop request arriving twice at once is not a second request.
            if loop.time() - first_signal[0] < DUPLICATE_SIGNAL_WINDOW:
                return
            log.warning("second signal: exiting now", extra={"event": "forced_exit"})
            os._exit(EXIT_INTERRUPTED)
        first_signal.append(loop.time())
        log.info("%s: stopping", signal.Signals(signum).name, extra={"event": "stopping"})
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    reloads: set[asyncio.Task[bool]] = set()

    def on_hangup() -> None:
        task = loop.create_task(daemon.reload(), name="reload")
        reloads.add(task)  # keep a reference until it is done
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    if duration is not None:
        loop.call_later(duration, stop.set)
    await daemon.run(stop)
    return 0


async def _demo(args: argparse.Namespace, zygote: Zygote | None = None) -> int:
    from healthcheck.demo import demo_fleet

    async with demo_fleet() as config:
        if args.region:
            config = config.only_regions(set(args.region))
        if args.once:
            if args.db:  # the round is stored in FILE, as `--once --record` stores it
                config = dataclasses.replace(
                    config, storage=dataclasses.replace(config.storage, path=args.db)
                )
            return await _once(config, args.format, record=args.db is not None)
        from healthcheck.daemon import Daemon
        from healthcheck.front import HttpFront
        from storage.writer import StorageWriter

        scratch = tempfile.TemporaryDirectory(prefix="healthcheck-demo-")
        writer = StorageWriter(args.db or os.path.join(scratch.name, "demo.db"))
        daemon = Daemon(config, writer, front=HttpFront, zygote=zygote)
        printer = asyncio.create_task(_print_periodically(daemon, args.refresh, args.format))
        try:
            return await _run_daemon(daemon, args.duration)
        finally:
            printer.cancel()
            if daemon.board.latest:
                _print_report(_board_report(daemon), args.format)
            scratch.cleanup()


def _board_report(daemon: Daemon) -> Report:
    results = [result for result, _ in daemon.board.latest.values()]
    return Report(daemon.config, results)


async def _print_periodically(daemon: Daemon, every: float, fmt: str) -> None:
    while True:
        await asyncio.sleep(every)
        if daemon.board.latest:
            _print_report(_board_report(daemon), fmt)
            print(flush=True)
