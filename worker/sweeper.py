"""The sweeper: re-enqueue cases and messages lost between steps, so a lost broker message loses no case.

Runs periodically from beat (the `sweep` task) and once from the command line (`skintriage sweep`).
Re-enqueuing is always safe: the tasks re-read the rows and claim them, so a job that was not lost
after all only produces a duplicate that does nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass

from skintriage import cases
from skintriage.db import session_factory
from skintriage.settings import Settings, get_settings
from worker import enqueue

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """How many jobs one sweep re-enqueued, and how many it could not (broker down)."""

    triage: int = 0
    delivery: int = 0
    outbox: int = 0
    not_enqueued: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (task return value, CLI output)."""
        return asdict(self)


def sweep_once(*, settings: Settings) -> SweepReport:
    """Find stuck cases and unsent messages and enqueue their next step once."""
    report = SweepReport()
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:
        plan = cases.find_stuck(session=session, stuck_after_s=settings.stuck_after_s)
    for case_id in plan.to_process:
        if enqueue.enqueue_triage(case_id):
            report.triage += 1
            # A fresh queued_at means the next sweep waits another STUCK_AFTER_S before adding a duplicate.
            with sessions.begin() as session:
                cases.mark_queued(session=session, case_id=case_id)
        else:
            report.not_enqueued += 1
    for case_id in plan.to_deliver:
        if enqueue.enqueue_delivery(case_id):
            report.delivery += 1
        else:
            report.not_enqueued += 1
    for message_id in plan.outbox:
        if enqueue.enqueue_outbox(message_id):
            report.outbox += 1
        else:
            report.not_enqueued += 1
    if report.triage or report.delivery or report.outbox or report.not_enqueued:
        log.warning("sweeper re-enqueued stuck work: %s", report.as_dict(), extra=report.as_dict())
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage sweep` (none: the settings say everything)."""


def main(args: argparse.Namespace) -> int:
    """Sweep once, print what was re-enqueued and exit (1 when the broker could not be reached)."""
    from skintriage.logconfig import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    report = sweep_once(settings=settings)
    print(json.dumps(report.as_dict()))
    return 1 if report.not_enqueued else 0
