"""The worker's name for skintriage.queueing (enqueue_triage, enqueue_delivery, enqueue_outbox).

Publishing lives in the domain package so that the bot and the console never import worker/.
"""

from __future__ import annotations

from skintriage.queueing import ENQUEUE_TIMEOUT_S, enqueue_delivery, enqueue_outbox, enqueue_triage

__all__ = ["ENQUEUE_TIMEOUT_S", "enqueue_delivery", "enqueue_outbox", "enqueue_triage"]
