"""Warning signs in a patient's own words (a caption or a text), in English and Korean.

A spot that bleeds, grows, itches, changes or does not heal should be seen by a doctor soon whatever a
photo shows, so such words are answered with that advice instead of "send a photo". Matching is on word
stems and is deliberately generous: a false alarm costs a sentence, a missed one costs a warning. Negations
("it doesn't itch") are not understood and still count.
"""

from __future__ import annotations

import re

# Sign -> patterns, in the order signs are named to the patient. Korean has no spaces between a stem and
# its endings, so its patterns are stems; "피" (blood) alone would match "피부" (skin), hence its endings.
PATTERNS: dict[str, tuple[str, ...]] = {
    "bleeding": (
        r"\bbl(?:eed|ed|ood)\w*",
        r"출혈",
        r"피\s?(?:가|나|났|남|를|도|범벅|딱지)",
        r"(?<![가-힣])피(?![가-힣])",  # the word on its own
    ),
    "growing": (
        r"\bgr(?:ow|ew|own)\w*",
        r"\b(?:bigger|larger|enlarg\w*|spread\w*)",
        r"커지|커졌|커짐|커져|(?<!모)자라|자랐|넓어",
    ),
    "itching": (r"\bitch\w*", r"가려워|가려움|가렵|간지러|간지럽"),
    "changed": (
        r"\bchang\w*",
        r"\b(?:darker|different|new colou?r|new shape|evolv\w*)",
        r"변화|변했|변해|변함|변하|달라졌|달라짐|색이 진해",
    ),
    "not_healing": (
        r"\b(?:not heal\w*|won'?t heal|doesn'?t heal|isn'?t healing|ooz\w*|crust\w*|scab\w*|sore\b|ulcer\w*)",
        r"낫지\s?않|안\s?나아|안\s?낫|진물|딱지|궤양",
    ),
}
_COMPILED = {sign: re.compile("|".join(patterns), re.IGNORECASE) for sign, patterns in PATTERNS.items()}


def find_warning_signs(text: str | None) -> list[str]:
    """The warning signs a text mentions (keys of PATTERNS, in their order); [] for none or no text."""
    if not text:
        return []
    return [sign for sign, pattern in _COMPILED.items() if pattern.search(text)]
