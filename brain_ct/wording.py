"""The words a reading is shown with, in one place: the verdict, the demo-model note, the unverified caveat.

App, CLI and PDF report all take their wording from here, so a verdict reads the same wherever it
is shown. A leaf module: it imports nothing of the package.
"""

from __future__ import annotations

#: What the bundled demo model (and any model trained on synthetic data only) is, in words: the app's
#: banner, the report and the model card all say it.
DEMO_NOTE = "trained on synthetic phantoms — for demonstration only"

#: The caveat every output carries when the head-CT check was skipped ("Allow unusual images",
#: ``--allow-unverified``): the model was only ever meant for axial head-CT slices.
UNVERIFIED_NOTE = (
    "Head-CT check skipped (unusual images allowed): this input was not verified to be an axial "
    "head-CT slice, and the model was made only for those. Treat this reading as meaningless unless "
    "the image really is one."
)


def verdict(label: str, *, scope: str = "", hedged: bool = False, capitalised: bool = True) -> str:
    """A reading's verdict in words: "Hemorrhage suspected" for label ``"hemorrhage"``, else "No hemorrhage found".

    Args:
        label: the reading's label, ``"hemorrhage"`` or ``"normal"``.
        scope: words appended to the verdict, e.g. ``" in this scan"``.
        hedged: a negative verdict adds "by the model" (the report: a model that finds nothing has
            not shown that nothing is there).
        capitalised: start with a capital letter (a heading) rather than lower case (inside a sentence).
    """
    if label == "hemorrhage":
        words = "hemorrhage suspected"
    else:
        words = "no hemorrhage found" + (" by the model" if hedged else "")
    words += scope
    return words[:1].upper() + words[1:] if capitalised else words


def threshold_relation(label: str) -> str:
    """How the probability stands to the threshold for this label: "at or above" (hemorrhage) or "below"."""
    return "at or above" if label == "hemorrhage" else "below"
