"""HAM10000's diagnoses mapped to the classifier's classes.

The classes, their index order and the risk tiers are the domain's words: skintriage.vocabulary holds
them (it imports nothing, so ml/ may use it).
"""

from __future__ import annotations

from skintriage.vocabulary import Label

__all__ = ["DX_TO_LABEL", "label_for_dx"]

# HAM10000's seven diagnoses merged into three classes, as in the reference study.
DX_TO_LABEL: dict[str, str] = {
    "mel": Label.MEL,
    "nv": Label.NV,
    "bkl": Label.OTHER,
    "bcc": Label.OTHER,
    "akiec": Label.OTHER,
    "vasc": Label.OTHER,
    "df": Label.OTHER,
}


def label_for_dx(dx: str) -> str:
    """Map a HAM10000 diagnosis code to MEL, NV or OTHER."""
    key = dx.strip().lower()
    if key not in DX_TO_LABEL:
        raise ValueError(f"unknown HAM10000 diagnosis {dx!r}; expected one of {sorted(DX_TO_LABEL)}")
    return DX_TO_LABEL[key]
