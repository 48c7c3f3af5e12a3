"""`skintriage worker`: a Celery worker for the triage and/or replies queues, with /healthz and metrics.

The GPU worker runs `--queues triage --pool solo --concurrency 1`, one per GPU: the models load once
in that process on first use (or at start with the default --warm) and every job reuses them.
The reply sender runs `--queues replies --pool threads --concurrency 4` (sending is I/O-bound).
A triage worker whose models keep failing, or whose job hangs, turns unhealthy (worker.health): /healthz
answers 503 and it stops consuming the triage queue, so the healthy workers get the jobs.
"""

from __future__ import annotations

import argparse
import logging
import socket
from typing import Any

from skintriage.settings import Settings, get_settings

log = logging.getLogger(__name__)

POOLS = ("solo", "threads", "prefork")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage worker`."""
    parser.add_argument(
        "--queues", default="triage,replies", help="comma-separated queues to consume (default: triage,replies)"
    )
    parser.add_argument("--pool", choices=POOLS, default="solo", help="execution pool (default solo)")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1; keep 1 for solo)")
    parser.add_argument("--beat", action="store_true", help="also run the periodic jobs (embedded beat; one per site)")
    parser.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load the models when the worker starts instead of on the first job (triage queue, solo/threads pool)",
    )
    parser.add_argument("--hostname", default=None, help="Celery node name (default: triage@HOST or replies@HOST)")
    parser.add_argument("--loglevel", default=None, help="log level (default: LOG_LEVEL)")


def health_check(settings: Settings, queues: list[str]) -> dict[str, Any]:
    """What /healthz reports: database, broker and, on the triage queue, the models and the worker's health."""
    from sqlalchemy import text

    from skintriage.db import engine_for
    from worker import health, pipeline_cache
    from worker.celery_app import TRIAGE_QUEUE, get_app

    report: dict[str, Any] = {"ok": True, "queues": queues}
    try:
        with engine_for(settings.resolved_database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        report["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a probe reports failures
        report["ok"], report["database"] = False, type(exc).__name__
    try:
        with get_app(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        report["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a probe reports failures
        report["ok"], report["broker"] = False, type(exc).__name__
    if TRIAGE_QUEUE in queues:
        if pipeline_cache.last_error:
            report["ok"], report["models"] = False, f"unavailable: {pipeline_cache.last_error}"
        else:
            report["models"] = "loaded" if pipeline_cache.loaded() else "not loaded yet"
        report.update(health.state.report())
        if not health.state.healthy:
            report["ok"] = False
    return report


def _watch_health(settings: Settings) -> None:
    """Stop consuming the triage queue once unhealthy, and start the watchdog over hung jobs."""
    from celery.signals import worker_ready

    from worker import health
    from worker.celery_app import TRIAGE_QUEUE

    health.state.configure(max_failures=settings.worker_max_infra_failures, job_deadline_s=settings.job_deadline_s)

    def stop_consuming(consumer: Any, reason: str) -> None:
        # What Celery's `cancel_consumer` control command does, without a broadcast through the broker.
        consumer.call_soon(consumer.cancel_task_queue, TRIAGE_QUEUE)
        log.error("stops consuming the %s queue: %s", TRIAGE_QUEUE, reason)

    def on_ready(sender: Any = None, **_: Any) -> None:
        health.state.on_unhealthy(lambda reason: stop_consuming(sender, reason))
        if not health.state.healthy:  # turned unhealthy while starting (e.g. the warm-up)
            stop_consuming(sender, health.state.unhealthy_reason or "")

    worker_ready.connect(on_ready, weak=False)
    if settings.job_deadline_s:
        from worker.tasks import hand_back_hung

        health.watch(lambda case_id, _elapsed: hand_back_hung(case_id, settings=settings))


def _warm_up(settings: Settings) -> None:
    from ml.errors import ModelUnavailableError
    from skintriage.exceptions import InfrastructureError
    from worker import health, pipeline_cache

    try:
        pipeline_cache.get_pipeline(settings)
    except ModelUnavailableError as exc:
        log.error("models not loaded at start: %s; jobs stay queued until MODEL_DIR has a trusted model", exc)
    except InfrastructureError as exc:
        log.error("models not loaded at start: %s", exc)
        health.state.record_infrastructure_failure(exc)


def main(args: argparse.Namespace) -> int:
    """Run the worker until it is stopped (SIGTERM finishes the current job first)."""
    from celery.signals import worker_ready

    from skintriage import leases
    from skintriage.logconfig import configure_logging, register_secret
    from skintriage.observability import serve_health
    from worker.celery_app import REPLIES_QUEUE, TRIAGE_QUEUE, get_app

    settings = get_settings()
    configure_logging(args.loglevel or settings.log_level, json_lines=settings.log_json)
    settings.check_secrets()
    register_secret(settings.telegram_bot_token.get_secret_value())
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(queues) - {TRIAGE_QUEUE, REPLIES_QUEUE}
    if not queues or unknown:
        raise SystemExit(f"--queues takes {TRIAGE_QUEUE} and/or {REPLIES_QUEUE}, got {args.queues!r}")
    if args.pool == "solo" and args.concurrency != 1:
        raise SystemExit("--pool solo runs one job at a time; use --concurrency 1 (start one worker per GPU)")

    app = get_app(settings)
    check = lambda: health_check(settings, queues)  # noqa: E731
    serve_health(settings.health_port, check)
    if settings.metrics_port and settings.metrics_port != settings.health_port:
        serve_health(settings.metrics_port, check)

    if TRIAGE_QUEUE in queues and args.pool in {"solo", "threads"}:
        # The jobs run in this process, so its health is theirs (with prefork they run in the children).
        _watch_health(settings)
    if args.warm and TRIAGE_QUEUE in queues and args.pool in {"solo", "threads"}:
        # In the process that runs the jobs, after start-up and never at import (CUDA and fork do not mix).
        worker_ready.connect(lambda **_: _warm_up(settings), weak=False)

    name = args.hostname or f"{'+'.join(queues)}@{socket.gethostname()}"
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--pool",
        args.pool,
        "--concurrency",
        str(args.concurrency),
        "--hostname",
        name,
        "--loglevel",
        (args.loglevel or settings.log_level).upper(),
        # No worker-to-worker chatter: it needs broadcast, which the filesystem transport does poorly.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    lease = None
    if args.beat:
        # One beat per deployment, embedded or not: a second one refuses to start (see skintriage.leases).
        lease = leases.hold_or_exit("beat", database_url=settings.resolved_database_url, ttl_s=settings.lease_ttl_s)
        # The embedded beat keeps its schedule under DATA_DIR: without the folder it dies at start while the
        # worker carries on, and no sweep ever runs (with Redis and S3 nothing else creates DATA_DIR).
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv.append("--beat")
    log.info("worker %s consuming %s with pool %s", name, queues, args.pool)
    try:
        app.worker_main(argv)
    finally:
        if lease is not None:
            lease.stop()
    return 0
