"""The message catalogues and the guidance overrides."""

from __future__ import annotations

import re

import pytest

from bot.i18n import LANGUAGES, Texts, language_for, placeholders
from devtools.local_api import plain_text
from skintriage.exceptions import ConfigurationError
from skintriage.vocabulary import RetakeReason, Tier

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


def korean_word_problems(text: str) -> list[str]:
    """What a Korean text says in the words patients misread: 사례 (a "case" reads as a case study; say 접수 번호),
    병변 (say 점 or 피부 부위), 피부과 without 전문의, 양성 alone (reads as "positive"; say 암이 아닌 것(양성)), and
    의료진 without 서비스 (the English says "clinician(s) of the service")."""
    problems = [word for word in ("사례", "병변", "피부과 진료") if word in text]
    if text.count("피부과") != text.count("피부과 전문의"):
        problems.append("피부과")
    if text.count("양성") != text.count("암이 아닌 것(양성)"):
        problems.append("양성")
    if re.search(r"(?<!서비스 )의료진", text):
        problems.append("의료진")
    return problems


def test_the_korean_catalogue_keeps_to_the_plain_words() -> None:
    korean = TEXTS.catalogues["ko"]
    assert {key: korean_word_problems(text) for key, text in korean.items() if korean_word_problems(text)} == {}
    for key, text in TEXTS.catalogues["en"].items():
        assert "staff" not in text, key  # clinician(s) of the service, in both languages
        if "clinician" in text.lower():
            assert "서비스 의료진" in korean[key], key


def test_the_korean_scan_finds_the_words_the_catalogue_used_before() -> None:
    old = "<b>사례 #7</b>: 피부과 진료를 받으세요. 이 병변은 양성으로 밝혀지지만, 교육받은 의료진이 봅니다."
    assert korean_word_problems(old) == ["사례", "병변", "피부과 진료", "피부과", "양성", "의료진"]
    assert korean_word_problems("피부과에 가세요.") == ["피부과"]
    new = "<b>접수 번호 #7</b>: 피부과 전문의 진료를 받으세요. 이 점은 암이 아닌 것(양성)으로, 서비스 의료진이 봅니다."
    assert korean_word_problems(new) == []
