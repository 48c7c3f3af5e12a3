"""The domain's vocabulary: stored values pinned, and a module every package can import (standard library only)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from skintriage import vocabulary
from skintriage.vocabulary import (
    BOOKING_ANSWERS,
    LABELS,
    MEL_INDEX,
    OUTBOX_KINDS,
    REVIEW_VERDICTS,
    Label,
    Modality,
    RetakeReason,
    Tier,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(vocabulary.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the module imports nothing of the project"
            roots.add((node.module or "").split(".")[0])
    assert roots, "the walk found no import at all; did the module move?"
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}, roots - set(sys.stdlib_module_names)


def test_the_label_order_is_pinned() -> None:
    # The classifier's output index order: a swap silently turns melanoma into nevus.
    assert LABELS == ("MEL", "NV", "OTHER")
    assert all(type(label) is str for label in LABELS)
    assert MEL_INDEX == 0
    assert tuple(Label) == LABELS


def test_stored_values_are_pinned() -> None:
    # The database and the model cards hold these strings: renaming one is a data migration.
    assert [t.value for t in Tier] == ["HIGH", "MEDIUM", "LOW", "UNCERTAIN", "RETAKE"]
    assert {m.value for m in Modality} == {"dermoscopic", "clinical", "unknown"}
    assert REVIEW_VERDICTS == ("agree", "disagree", "cannot_assess")
    assert OUTBOX_KINDS == ("followup", "review", "booking", "answers", "reminder_offer", "reminder")
    assert BOOKING_ANSWERS == ("booked", "not_yet", "declined")
    assert RetakeReason("not_skin") is RetakeReason.NOT_SKIN and len(RetakeReason) == 9


def test_no_other_module_defines_the_vocabulary_again() -> None:
    names = {"Tier", "RetakeReason", "Label", "Modality", "ReviewVerdict", "OutboxKind", "BookingAnswer"}
    tuples = {"LABELS", "REVIEW_VERDICTS", "OUTBOX_KINDS", "BOOKING_ANSWERS"}
    found = []
    for package in ("bot", "worker", "ml", "console", "skintriage", "devtools"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == Path(vocabulary.__file__):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name in names:
                    found.append(f"{path.relative_to(ROOT)}: class {node.name}")
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                if isinstance(node, ast.Assign | ast.AnnAssign):
                    found += [
                        f"{path.relative_to(ROOT)}: {t.id} ="
                        for t in targets
                        if isinstance(t, ast.Name) and t.id in tuples
                    ]
    assert found == [], "import these from skintriage.vocabulary instead:\n" + "\n".join(found)
