"""The words a reading is shown with, in one place: the verdict, the demo-model note, the unverified caveat,
counts of things (:func:`plural`).

App, CLI and PDF report all take their wording from here, so a verdict reads the same wherever it
is shown. A leaf module: it imports nothing of the package.
"""

from __future__ import annotations

#: The line every output carries (app, CLI, report, model card, explanation text); also ``brain_ct.DISCLAIMER``.
DISCLAIMER = "Research and education aid only — not a diagnosis. A qualified specialist must read the images."

#: What the bundled demo model (and any model trained on synthetic data only) is, in words: the app's
#: banner, the report and the model card all say it.
DEMO_NOTE = "trained on synthetic phantoms — for demonstration only"

#: The same for the models bundled in ``models/`` that also learnt the normal anatomy of the one real head in
#: ``data/real_anatomy/`` (``brain_ct_trained_on`` names its "real anatomy"): what they are, exactly.
BUNDLED_NOTE = "trained on synthetic phantoms and one real head — for demonstration only"

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


#: Subtype probabilities at or above this are listed where subtypes are shown in brief (the CLI's
#: ``subtypes`` column, the scan summary's slices); below it only the top subtype is named. Low on
#: purpose: a second subtype at 0.2 is worth seeing beside the first, while a trained model puts
#: the subtypes of a normal slice near 0.
SUBTYPE_SHOWN = 0.1

#: What the subtype outputs are, said wherever they are shown in full (the PDF report).
SUBTYPE_NOTE = (
    "Subtype probabilities are research outputs of the model, each an independent sigmoid, not a "
    "diagnosis: a bleed may be of several subtypes or of one the model was not trained on."
)


def hemorrhage_name(subtype: str) -> str:
    """A subtype's name inside a sentence: "a subdural hemorrhage", "an epidural hemorrhage"."""
    article = "an" if subtype[:1] in "aeiou" else "a"
    return f"{article} {subtype} hemorrhage"


def subtype_list(subtypes: dict[str, float], cut: float = SUBTYPE_SHOWN, limit: int = 3) -> str:
    """Subtypes at or above ``cut``, most probable first, else the top one: "subdural 0.81, subarachnoid 0.12".

    Args:
        subtypes: ``{name: probability}`` (a subtype model's outputs, or a scan's subtype probabilities).
        cut: the lowest probability listed beside the top subtype.
        limit: the most subtypes listed (a table column stays readable).
    """
    ranked = sorted(subtypes.items(), key=lambda kv: -kv[1])
    shown = ([kv for kv in ranked if kv[1] >= cut] or ranked[:1])[:limit]
    return ", ".join(f"{name} {p:.2f}" for name, p in shown)


def slice_ranges(indices: list[int] | tuple[int, ...]) -> str:
    """0-based slice indices as people number slices (from 1), runs joined: [11, 12, 13, 14, 20] → "12–15, 21"."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0] + 1}" if len(r) == 1 else f"{r[0] + 1}–{r[-1] + 1}" for r in runs)


#: How a slice with Hounsfield units (DICOM, NIfTI) is shown: the brain window of
#: :data:`brain_ct.windowing.PRESETS` (centre / width in HU), which every HU reader renders.
HU_DISPLAY = "brain window (centre 40 HU, width 80 HU)"

#: How an ordinary picture (PNG, JPG) is shown: its own grey levels. It has no Hounsfield units, so
#: whatever window its author chose is what is seen; nothing is windowed again.
IMAGE_DISPLAY = "the image as given (a PNG or JPG has no Hounsfield units to window)"


def display_caption(source: str) -> str:
    """What a slice's display image is, for captions: :data:`HU_DISPLAY` for ``"dicom"`` and
    ``"nifti"`` sources, :data:`IMAGE_DISPLAY` for ``"image"``, "the slice" when the source is unknown."""
    if source in ("dicom", "nifti"):
        return HU_DISPLAY
    return IMAGE_DISPLAY if source == "image" else "the slice"


def plural(n: int, noun: str) -> str:
    """``"1 slice"``, ``"2 slices"``: a count with its noun (regular plurals only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


#: The app's words around a reading (brain_ct.readings, app.py).
EXPIRED = (
    "This reading is no longer kept on the server (readings expire after a while). Upload the file again."
)
PLOT_LABEL = "P(hemorrhage) per slice (dashed: threshold)"
NO_PLOT_LABEL = "No plot: separate images have no order to plot along (each image's P is listed left)"
SLIDER_LABEL = "Slice number (1 = most inferior)"
IMAGE_SLIDER_LABEL = "Image number (upload order)"
#: Why the window presets cannot change an 8-bit image.
NO_WINDOW_NOTE = (
    "PNG/JPG images hold no Hounsfield units: they were windowed when saved, so presets cannot change them "
    "(DICOM only)."
)
#: The first words of an error on the page: a busy server, a refused upload (not a head CT, too large), or a
#: file that could not be read.
HEADING_BUSY = "Busy:"
HEADING_REFUSED = "Refused:"
HEADING_UNREADABLE = "Could not read this upload:"
#: A file component given a web address instead of an upload (the app reads uploaded files only).
URL_REFUSED = "A web address was given instead of a file. Only uploaded files are read: download the file and upload it."
