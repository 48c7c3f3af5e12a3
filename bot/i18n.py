"""Patient-facing texts: gettext .po catalogues (read with Babel at startup) and optional guidance overrides.

Message ids are keys such as ``intake.ack``; texts use Telegram's HTML subset and ``{name}``
placeholders, whose values are HTML-escaped here. No build step: the .po files are read directly.

A deployment may override the guidance per tier or per retake reason with GUIDANCE_FILE, a TOML
file whose tables are tiers (HIGH, MEDIUM, LOW, UNCERTAIN, RETAKE) or ``retake.<reason>``, each
with plain-text ``en`` and ``ko`` values, e.g.::

    [HIGH]
    en = "Please see a dermatologist within one week."
    ko = "1주 이내에 피부과 전문의 진료를 받으세요."
"""

from __future__ import annotations

import html
import logging
import string
import tomllib
from functools import lru_cache
from pathlib import Path

from babel.messages.pofile import read_po

from skintriage.exceptions import ConfigurationError
from skintriage.vocabulary import RetakeReason, Tier

log = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES: tuple[str, ...] = ("en", "ko")
DEFAULT_LANGUAGE = "en"
LANGUAGE_NAMES = {"en": "English", "ko": "한국어"}
MAX_GUIDANCE_CHARS = 1500
GUIDANCE_KEYS: tuple[str, ...] = tuple(t.value for t in Tier) + tuple(f"retake.{r.value}" for r in RetakeReason)


def language_for(code: str | None) -> str:
    """Our language for a Telegram language code (ko-KR -> ko); English for anything else."""
    if code and code.lower().split("-")[0] in LANGUAGES:
        return code.lower().split("-")[0]
    return DEFAULT_LANGUAGE


def read_catalogue(path: Path) -> dict[str, str]:
    """Message id -> text of one .po file (untranslated entries are left out)."""
    with path.open("rb") as fh:
        catalog = read_po(fh)
    return {str(m.id): str(m.string) for m in catalog if m.id and m.string}


def placeholders(text: str) -> set[str]:
    """The {name} placeholders a text uses."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def read_guidance_file(path: Path) -> dict[str, dict[str, str]]:
    """Guidance overrides from a TOML file: {key: {language: plain text}}, checked against the known keys."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"GUIDANCE_FILE {path} does not exist; fix the path or unset GUIDANCE_FILE") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"GUIDANCE_FILE {path} is not valid TOML: {exc}") from exc
    flat: dict[str, dict[str, str]] = {}
    for key, value in data.items():
        if key == "retake" and isinstance(value, dict):
            flat.update({f"retake.{reason}": texts for reason, texts in value.items()})
        else:
            flat[key] = value
    for key, texts in flat.items():
        if key not in GUIDANCE_KEYS:
            raise ConfigurationError(f"GUIDANCE_FILE {path}: unknown table [{key}]; use one of {list(GUIDANCE_KEYS)}")
        if not isinstance(texts, dict) or not all(isinstance(t, str) and t.strip() for t in texts.values()):
            raise ConfigurationError(f'GUIDANCE_FILE {path}: [{key}] must hold non-empty strings like en = "..."')
        too_long = [lang for lang, t in texts.items() if len(t) > MAX_GUIDANCE_CHARS]
        if too_long:
            raise ConfigurationError(
                f"GUIDANCE_FILE {path}: [{key}] {too_long} longer than {MAX_GUIDANCE_CHARS} characters; "
                "shorten it (it must fit in one Telegram message with the rest of the answer)"
            )
        unknown = set(texts) - set(LANGUAGES)
        if unknown:
            raise ConfigurationError(f"GUIDANCE_FILE {path}: [{key}] has languages {sorted(unknown)}; use {LANGUAGES}")
    return flat


class Html(str):
    """Text that is already safe HTML (a catalogue text or an escaped value): not escaped again."""


def _escape(value: object) -> str:
    return value if isinstance(value, Html) else html.escape(str(value), quote=False)


class Texts:
    """All patient-facing texts in every language, with guidance overrides applied."""

    def __init__(self, catalogues: dict[str, dict[str, str]], overrides: dict[str, dict[str, str]] | None = None):
        if DEFAULT_LANGUAGE not in catalogues:
            raise ConfigurationError(f"no {DEFAULT_LANGUAGE} catalogue under {LOCALE_DIR}")
        self.catalogues = catalogues
        self.overrides = overrides or {}

    @classmethod
    def load(cls, *, locale_dir: Path = LOCALE_DIR, guidance_file: Path | None = None) -> Texts:
        """Read every language's messages.po and the optional guidance file."""
        catalogues = {}
        for lang in LANGUAGES:
            path = locale_dir / lang / "LC_MESSAGES" / "messages.po"
            if path.exists():
                catalogues[lang] = read_catalogue(path)
            else:
                log.warning("no catalogue for %s at %s; English is used instead", lang, path)
        overrides = read_guidance_file(guidance_file) if guidance_file else {}
        return cls(catalogues, overrides)

    def get(self, lang: str, key: str, **values: object) -> Html:
        """The text for `key` in `lang` (falling back to English) with escaped values filled in."""
        catalogue = self.catalogues.get(lang) or self.catalogues[DEFAULT_LANGUAGE]
        text = catalogue.get(key) or self.catalogues[DEFAULT_LANGUAGE].get(key)
        if text is None:
            raise KeyError(f"no text {key!r} in the catalogues; add it to bot/locale/*/LC_MESSAGES/messages.po")
        return Html(text.format_map({k: _escape(v) for k, v in values.items()}))

    def _override(self, lang: str, key: str) -> Html | None:
        texts = self.overrides.get(key) or {}
        text = texts.get(lang) or texts.get(DEFAULT_LANGUAGE)
        return Html(html.escape(text.strip(), quote=False)) if text else None

    def guidance(self, lang: str, tier: str) -> Html:
        """What to do and how soon for a tier."""
        return self._override(lang, tier) or self.get(lang, f"guidance.{tier}")

    def retake_reason(self, lang: str, reason: str | None) -> Html:
        """Why a photo could not be used and what to change (generic advice for an unknown reason)."""
        key = f"retake.{reason}"
        if reason and key in GUIDANCE_KEYS:
            return self._override(lang, key) or self.get(lang, key)
        return self.guidance(lang, Tier.RETAKE)


@lru_cache(maxsize=4)
def load_texts(guidance_file: Path | None = None) -> Texts:
    """The texts, read once per process (per guidance file)."""
    return Texts.load(guidance_file=guidance_file)
