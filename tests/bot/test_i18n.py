"""The message catalogues and the guidance overrides."""

from __future__ import annotations

import pytest

from bot.i18n import LANGUAGES, Texts, language_for, placeholders
from devtools.local_api import plain_text
from ml.labels import RetakeReason, Tier
from skintriage.exceptions import ConfigurationError

TEXTS = Texts.load()


def test_every_language_has_every_text_with_the_same_placeholders() -> None:
    english = TEXTS.catalogues["en"]
    for lang in LANGUAGES:
        catalogue = TEXTS.catalogues[lang]
        assert catalogue.keys() == english.keys(), lang
        for key, text in catalogue.items():
            assert text.strip(), (lang, key)
            assert placeholders(text) == placeholders(english[key]), (lang, key)
            plain_text(text, "HTML")  # Telegram's HTML subset only, tags balanced


def test_every_tier_and_retake_reason_has_guidance() -> None:
    for lang in LANGUAGES:
        for tier in Tier:
            assert TEXTS.get(lang, f"tier.{tier.value}")
            assert TEXTS.guidance(lang, tier.value)
        for reason in RetakeReason:
            assert TEXTS.retake_reason(lang, reason.value) != TEXTS.guidance(lang, "RETAKE")


def test_values_are_escaped_but_catalogue_html_is_kept() -> None:
    text = TEXTS.get("en", "intake.ack", case_id="<b>7</b>")
    assert "&lt;b&gt;7&lt;/b&gt;" in text and text.count("<b>") == 1


def test_telegram_language_codes() -> None:
    assert [language_for(c) for c in ("ko", "ko-KR", "en-GB", "de", None, "")] == ["ko", "ko", "en", "en", "en", "en"]


def test_guidance_file_overrides_tiers_and_reasons_and_falls_back_to_english(tmp_path) -> None:
    path = tmp_path / "guidance.toml"
    path.write_text(
        '[HIGH]\nen = "See a dermatologist within 7 days & bring this photo."\nko = "7일 이내에 진료를 받으세요."\n'
        '[retake]\nblurry = { en = "Blurry: hold still." }\n',
        encoding="utf-8",
    )
    texts = Texts.load(guidance_file=path)
    assert texts.guidance("en", "HIGH") == "See a dermatologist within 7 days &amp; bring this photo."
    assert texts.guidance("ko", "HIGH") == "7일 이내에 진료를 받으세요."
    assert texts.retake_reason("ko", "blurry") == "Blurry: hold still."
    assert texts.guidance("en", "LOW") == TEXTS.guidance("en", "LOW")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[SEVERE]\nen = "x"\n', "unknown table"),
        ('[HIGH]\nfr = "x"\n', "languages"),
        ('[HIGH]\nen = ""\n', "non-empty"),
        (f'[HIGH]\nen = "{"x" * 1600}"\n', "longer than"),
        ("[HIGH\n", "not valid TOML"),
    ],
)
def test_bad_guidance_files_are_refused_with_a_fix(tmp_path, content, message) -> None:
    path = tmp_path / "guidance.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=message):
        Texts.load(guidance_file=path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        Texts.load(guidance_file=tmp_path / "missing.toml")


def test_the_example_guidance_file_loads() -> None:
    from pathlib import Path

    import bot

    texts = Texts.load(guidance_file=Path(bot.__file__).parent / "texts" / "guidance.example.toml")
    assert "02-000-0000" in texts.guidance("ko", "HIGH")
    assert texts.retake_reason("en", "blurry").startswith("The photo is blurry. Hold the phone steady with both")
