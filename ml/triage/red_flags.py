"""The patient's own answers (where, changed, symptoms, age) and what they do to the photo's tier.

Pure and dependency-free: the bot asks, the domain package stores, the answer is composed from this.

Scoring follows the weighted 7-point checklist that NICE NG12 (1.7.2) uses for a pigmented skin lesion:
major features, 2 points each: change in size, irregular shape, irregular colour; minor features, 1 point
each: largest diameter 7 mm or more, inflammation, oozing or crusting, change in sensation (itch included).
3 points or more: refer urgently (the two-week pathway). How the patients' answers map onto the items:

- "grown bigger" -> change in size; "changed shape" -> irregular shape; "changed colour" -> irregular colour
  (a patient sees a change, not the irregularity a doctor sees; a changed shape or colour is the nearest
  thing a patient can tell, and the checklist's "change" features are what it asks a patient about);
  "two or more of these" -> at least two major features (4 points), whichever they are.
- "bleeds" and "crusts or does not heal" -> oozing or crusting; "itches" -> change in sensation.
- Not asked, so never counted: diameter 7 mm or more (a photo has no scale: ml.triage.measurements gives pixels,
  not millimetres) and inflammation (redness a patient cannot judge reliably). UNMAPPED names them.

Then the rules, in order (never lowering the photo's tier):
1. 3 points or more: HIGH, whatever the model said.
2. Out of scope (under 18, a nail, the mouth or genitals: the models learnt on adults' skin): UNCERTAIN,
   straight to a doctor with the reason, unless the photo already said HIGH or UNCERTAIN (the reason is
   still given: AnsweredTier.scope).
3. Palm or sole (acral): never LOW (UNCERTAIN), and the answer says acral spots need a doctor's look.
4. A change or symptom below the line (1-2 points) is never LOW either: the LOW advice itself says to see a
   doctor when a spot grows, changes, bleeds or itches, so the answer must not call it a common mole.
A photo that could not be judged (RETAKE) or a failed case has no tier: rules 1 and 2 still give one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from skintriage.vocabulary import Tier

# Most urgent first; a tier not in here (RETAKE, None) ranks after all of them.
URGENCY: tuple[str, ...] = (Tier.HIGH, Tier.UNCERTAIN, Tier.MEDIUM, Tier.LOW)

SKIP = "skip"
# Question -> its options, in the order the bot asks and shows them (each question also has SKIP).
QUESTIONS: dict[str, tuple[str, ...]] = {
    "site": ("face", "palm_sole", "nail", "mouth_genitals", "other"),
    "change": ("size", "shape", "colour", "several", "no", "unknown"),
    "symptoms": ("bleeds", "crusts", "itches", "itches_and_more", "none"),
    "age": ("adult", "child"),
}

# (question, option) -> the checklist items it stands for, with their points.
CHECKLIST: dict[tuple[str, str], dict[str, int]] = {
    ("change", "size"): {"size": 2},
    ("change", "shape"): {"shape": 2},
    ("change", "colour"): {"colour": 2},
    ("change", "several"): {"two_changes": 4},  # two or more of size, shape and colour, unknown which
    ("symptoms", "bleeds"): {"oozing": 1},
    ("symptoms", "crusts"): {"oozing": 1},
    ("symptoms", "itches"): {"sensation": 1},
    ("symptoms", "itches_and_more"): {"sensation": 1, "oozing": 1},
}
# Checklist items the questions cannot reach (see the module docstring).
UNMAPPED: tuple[str, ...] = ("diameter_7mm", "inflammation")
URGENT_POINTS = 3

# Answers that put the spot outside what the models were made for -> the reason code.
OUT_OF_SCOPE: dict[tuple[str, str], str] = {
    ("age", "child"): "child",
    ("site", "nail"): "nail",
    ("site", "mouth_genitals"): "mouth_genitals",
}
ACRAL = ("site", "palm_sole")

# Why the answers changed the tier (AnsweredTier.reason).
REASON_CHECKLIST = "checklist"  # 3 points or more -> HIGH
REASON_OUT_OF_SCOPE = "out_of_scope"  # -> UNCERTAIN, straight to a doctor
REASON_ACRAL = "acral"  # palm or sole: never LOW
REASON_CHANGING = "changing"  # a change or symptom below the line: never LOW


def check_answer(question: str, option: str) -> None:
    """Raise ValueError unless `option` is one of `question`'s options or SKIP."""
    if question not in QUESTIONS:
        raise ValueError(f"unknown question {question!r}; use one of {list(QUESTIONS)}")
    if option != SKIP and option not in QUESTIONS[question]:
        raise ValueError(f"unknown option {option!r} for {question!r}; use one of {[*QUESTIONS[question], SKIP]}")


def _given(answers: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """The (question, option) pairs actually answered, in question order (skipped and unknown left out)."""
    answers = answers or {}
    return [(q, answers[q]) for q in QUESTIONS if answers.get(q) in QUESTIONS[q]]


@dataclass(frozen=True)
class Checklist:
    """The weighted 7-point checklist as far as the answers reach it."""

    points: int
    items: dict[str, int]  # checklist item -> points counted
    answers: tuple[str, ...]  # "question:option" of the answers that gave points

    @property
    def urgent(self) -> bool:
        """3 points or more: NICE NG12 refers urgently."""
        return self.points >= URGENT_POINTS


def score_checklist(answers: Mapping[str, str] | None) -> Checklist:
    """Score the answers on the weighted 7-point checklist (an item counts once)."""
    items: dict[str, int] = {}
    scored: list[str] = []
    for pair in _given(answers):
        found = CHECKLIST.get(pair)
        if not found:
            continue
        scored.append(":".join(pair))
        for item, points in found.items():
            items[item] = max(items.get(item, 0), points)
    return Checklist(sum(items.values()), items, tuple(scored))


@dataclass(frozen=True)
class AnsweredTier:
    """The tier once the patient's answers are taken into account, and which answers changed it.

    reason: None when the answers changed nothing, else a REASON_* code. raised_by: "question:option" of the
    answers that raised the tier (empty when not raised). scope: "child", "nail", "mouth_genitals" or "acral"
    whenever an answer says so, raised or not, so the answer can say why the models may not fit.
    """

    tier: str | None
    reason: str | None
    raised_by: tuple[str, ...]
    checklist: Checklist
    scope: tuple[str, ...]

    @property
    def raised(self) -> bool:
        """Whether the answers made the tier more urgent than the photo's."""
        return bool(self.raised_by)


def urgency_index(tier: str | None) -> int:
    """0 for HIGH ... 3 for LOW; len(URGENCY) for no tier (RETAKE, failed)."""
    return URGENCY.index(tier) if tier in URGENCY else len(URGENCY)


def answered_tier(tier: str | None, answers: Mapping[str, str] | None) -> AnsweredTier:
    """The photo's tier (HIGH, UNCERTAIN, MEDIUM, LOW, RETAKE or None) with the patient's answers applied."""
    checklist = score_checklist(answers)
    given = _given(answers)
    scope = tuple(OUT_OF_SCOPE[p] for p in given if p in OUT_OF_SCOPE) + (("acral",) if ACRAL in given else ())
    out_of_scope = tuple(":".join(p) for p in given if p in OUT_OF_SCOPE)
    judged = tier in URGENCY

    def raise_to(new: str, reason: str, by: tuple[str, ...]) -> AnsweredTier:
        return AnsweredTier(new, reason, by, checklist, scope)

    if checklist.urgent and tier != Tier.HIGH:
        return raise_to(Tier.HIGH, REASON_CHECKLIST, checklist.answers)
    if out_of_scope and urgency_index(tier) > urgency_index(Tier.UNCERTAIN):
        return raise_to(Tier.UNCERTAIN, REASON_OUT_OF_SCOPE, out_of_scope)
    if judged and tier == Tier.LOW and ACRAL in given:
        return raise_to(Tier.UNCERTAIN, REASON_ACRAL, (":".join(ACRAL),))
    if judged and tier == Tier.LOW and checklist.points > 0:
        return raise_to(Tier.UNCERTAIN, REASON_CHANGING, checklist.answers)
    return AnsweredTier(tier, None, (), checklist, scope)
