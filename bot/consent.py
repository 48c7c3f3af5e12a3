"""The consent text and its version.

The version is a short hash of the consent text as patients read it, in every language, with the configured
values filled in (retention days, who runs the service). A hash needs no one to remember to bump a constant: any
change to the wording in either language, or to a value the text states, makes a new version, and every patient
who agreed to an older one is asked again on their next message.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from bot.i18n import LANGUAGES, Html, Texts
from skintriage.settings import Settings

# The introduction a patient agrees to, in order.
CONSENT_KEYS = (
    "start.greeting",
    "start.does",
    "start.does_not",
    "start.limits",
    "start.clinicians",
    "start.stored",
    "start.operator",
    "start.adults",
    "start.consent_ask",
)


class ConsentState(StrEnum):
    """Where a patient stands with the current consent text."""

    NONE = "none"  # never agreed
    OUTDATED = "outdated"  # agreed to an older text
    CURRENT = "current"


def consent_text(texts: Texts, lang: str, settings: Settings) -> Html:
    """The consent text in `lang` with the configured retention period and operator."""
    values = {"days": settings.retention_days, "operator": settings.service_operator}
    return Html("\n\n".join(texts.get(lang, key, **values) for key in CONSENT_KEYS))


def consent_version(texts: Texts, settings: Settings) -> str:
    """A short hash of the consent text in every language: it changes whenever any of them changes."""
    digest = hashlib.sha256()
    for lang in LANGUAGES:
        digest.update(lang.encode() + b"\0" + consent_text(texts, lang, settings).encode("utf-8") + b"\0")
    return digest.hexdigest()[:12]
