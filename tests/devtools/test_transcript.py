"""devtools.transcript writes the doc's sample conversations between their markers, and the doc has them."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.transcript import replace_sections

DOC = Path(__file__).resolve().parents[2] / "docs" / "conversation.md"


def test_only_the_text_between_the_markers_is_replaced() -> None:
    doc = (
        "intro\n<!-- transcript:en -->\nold\n<!-- /transcript:en -->\nmiddle\n"
        "<!-- transcript:ko -->\n<!-- /transcript:ko -->\nend\n"
    )
    out = replace_sections(doc, {"en": "**patient**: /start\n", "ko": "**patient**: /start\n"}, "the command")
    assert out.startswith("intro\n<!-- transcript:en -->\n\n*Recorded on ")
    assert "with `the command`.*\n\n**patient**: /start\n\n<!-- /transcript:en -->\nmiddle\n" in out
    assert "old" not in out and out.endswith("<!-- /transcript:ko -->\nend\n")
    assert replace_sections(out, {"en": "again\n"}, "c").count("<!-- transcript:en -->") == 1  # runs again
    with pytest.raises(ValueError, match="add the markers"):
        replace_sections("no markers here", {"en": "x"}, "c")


def test_the_doc_carries_recorded_transcripts_in_both_languages() -> None:
    text = DOC.read_text(encoding="utf-8")
    for lang, marker in (("en", "Received. I'm analysing your photo now"), ("ko", "받았습니다. 지금 사진을 분석하고")):
        block = text.split(f"<!-- transcript:{lang} -->")[1].split(f"<!-- /transcript:{lang} -->")[0]
        assert "python -m devtools.transcript" in block and marker in block
