"""Warning signs in a patient's own words (a caption or a text), in English and Korean.

A spot that bleeds, grows, itches, changes or does not heal should be seen by a doctor soon whatever a
photo shows, so such words are answered with that advice instead of "send a photo". They are also stored as the
patient's answers to the questions (ml.triage.red_flags.QUESTIONS) of the case they speak about (`as_answers`), so the
red flags count them as they count a tap. Matching is on word
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


# Which change a "changed" sign names; a change the words do not name counts as a changed shape (one major
# feature of the checklist, 2 points, like any single change the question offers).
_COLOUR_CHANGE = re.compile(r"\b(?:darker|lighter|colou?r\w*)|색", re.IGNORECASE)
_SHAPE_CHANGE = re.compile(r"\bshape\w*|모양", re.IGNORECASE)
_CHANGES = ("size", "shape", "colour")
_SYMPTOMS = {"bleeding": "bleeds", "not_healing": "crusts", "itching": "itches"}


def as_answers(text: str | None, signs: list[str], given: dict[str, str] | None = None) -> dict[str, str]:
    """The answers (question -> option of ml.triage.red_flags.QUESTIONS) the words add to those `given`; {} for none.

    Words only add: a change or symptom the patient tapped stays counted, and the words' ones join it ("itches"
    tapped, "it bleeds" written: "itches_and_more"; two different changes: "several").
    """
    given = given or {}
    changes = {given["change"]} & set(_CHANGES) if given.get("change") else set()
    if "growing" in signs:
        changes.add("size")
    if "changed" in signs:
        colour, shape = bool(_COLOUR_CHANGE.search(text or "")), bool(_SHAPE_CHANGE.search(text or ""))
        changes.update({"colour"} if colour else set())
        changes.update({"shape"} if shape or not colour else set())
    found: dict[str, str] = {}
    if given.get("change") == "several" or len(changes) >= 2:
        found["change"] = "several"
    elif changes:
        found["change"] = changes.pop()
    symptoms = {_SYMPTOMS[sign] for sign in signs if sign in _SYMPTOMS}
    before = given.get("symptoms")
    if before == "itches_and_more":
        symptoms = {"itches", "bleeds"}
    elif before in _SYMPTOMS.values():
        symptoms.add(before)
    if "itches" in symptoms and len(symptoms) > 1:
        found["symptoms"] = "itches_and_more"
    elif symptoms:
        found["symptoms"] = "bleeds" if "bleeds" in symptoms else symptoms.pop()
    return {question: option for question, option in found.items() if given.get(question) != option}
