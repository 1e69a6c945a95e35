"""What one app server is made of, web-framework free: its settings, its models and its run folder.

:class:`AppSettings` (models, run folder, per-request limits, file lifetime, proxy), the
:class:`ModelRegistry` (predictors by the id people see, loaded once), the run folder's life
(:func:`prepare_run_dir` at start, :func:`start_sweeper` while serving, :func:`remove_run_dir` at
exit), the one-click examples and the start-up helpers (:func:`warm_up`, :func:`port_free`). The
Gradio app (``app.py``) builds its page from these.
"""

from __future__ import annotations

import argparse
import atexit
import io
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from pydicom.filewriter import dcmwrite

from brain_ct.errors import BrainCTError, InvalidInputError
from brain_ct.limits import UploadLimits
from brain_ct.model import (
    DEFAULT_MODEL_DIR,
    DEMO_MODEL_DIR,
    SUBTYPE_DEMO_MODEL_DIR,
    resolve_model_id,
    shown_model_id,
)
from brain_ct.page_text import md_escape
from brain_ct.predictor import Predictor
from brain_ct.serving import sweep_dead_runs, sweep_folder
from brain_ct.sniff import DICOM_SUFFIXES, IMAGE_SUFFIXES
from brain_ct.synthetic import generate_slice, to_dicom

log = logging.getLogger("brain_ct.app")

#: Uploads (finished or aborted), overlays and reports are deleted this long after they were written
#: (env ``BRAIN_CT_FILE_MAX_AGE_S``), swept every SWEEP_EVERY_S; the examples' copies are kept.
OUTPUT_MAX_AGE_S = 300
SWEEP_EVERY_S = 60
REPO_DIR = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_DIR / "examples"
#: Real anatomy among the examples: a level of the repository's real head that training holds out, and
#: pydicom's two real head-CT test slices (a posterior-fossa level; a lossy JPEG 2000 whose blobs read as blood).
REAL_EXAMPLE_FILES = (REPO_DIR / "data" / "real_anatomy" / "dcm_qa_ct-GE" / "15.dcm",)
REAL_EXAMPLES = ("J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm")


def run_parent() -> Path:
    """Where run folders live: ``<BRAIN_CT_TMP or the system temp folder>/brain_ct_app``."""
    return Path(os.environ.get("BRAIN_CT_TMP") or tempfile.gettempdir()) / "brain_ct_app"


def default_run_dir() -> Path:
    """This process's run folder, ``<run_parent()>/run-<pid>`` (named only; nothing is created)."""
    return run_parent() / f"run-{os.getpid()}"


def _extra_models() -> list[str]:
    """Env ``BRAIN_CT_MODELS`` (comma-separated); unset: the bundled models that are there — the
    default ResNet-50, the small demo, the small subtype model (the default model itself is listed once)."""
    listed = os.environ.get("BRAIN_CT_MODELS")
    if listed is not None:
        return [m.strip() for m in listed.split(",") if m.strip()]
    bundled = (DEFAULT_MODEL_DIR, DEMO_MODEL_DIR, SUBTYPE_DEMO_MODEL_DIR)
    return [str(m) for m in bundled if (m / "config.json").is_file()]


@dataclass
class AppSettings:
    """What one app server is built from: its models, its run folder and its per-request limits.

    Attributes:
        model: Hub id or folder of the default model; None: env ``BRAIN_CT_MODEL``, then the bundled default.
        revision: Hub revision of the default model (a commit hash pins it).
        extra_models: more models for the dropdown (Hub ids or folders), loaded on first use.
        run_dir: everything this server writes (outputs; Gradio's upload cache when :func:`main` runs
            it): removed at exit.
        limits: what one upload may cost (:class:`brain_ct.limits.UploadLimits`: slices and pixels per
            scan, bytes, seconds); default the public-Space values, raised by ``BRAIN_CT_*`` variables.
        file_max_age_s: seconds an upload or output file is kept (then swept).
        sweep_every_s: seconds between sweeps of the run folder.
        behind_proxy: requests come through a proxy (a Hugging Face Space, env ``SPACE_ID``, or env
            ``BRAIN_CT_BEHIND_PROXY=1``): a client is told apart by the first ``X-Forwarded-For`` hop.
    """

    model: str | None = None
    revision: str | None = None
    extra_models: list[str] = field(default_factory=list)
    run_dir: Path = field(default_factory=default_run_dir)
    limits: UploadLimits = field(default_factory=UploadLimits.from_env)
    file_max_age_s: float = OUTPUT_MAX_AGE_S
    sweep_every_s: float = SWEEP_EVERY_S
    behind_proxy: bool = False

    @classmethod
    def from_env(cls, model: str | None = None, revision: str | None = None) -> AppSettings:
        """Settings for a server: ``revision`` defaults to env ``BRAIN_CT_MODEL_REVISION``, the extra
        models come from env ``BRAIN_CT_MODELS`` (comma-separated), the run folder from ``BRAIN_CT_TMP``,
        the file lifetime from ``BRAIN_CT_FILE_MAX_AGE_S`` (sweeps every fifth of it, at most every
        minute), the proxy from ``SPACE_ID`` / ``BRAIN_CT_BEHIND_PROXY``."""
        max_age = float(os.environ.get("BRAIN_CT_FILE_MAX_AGE_S") or OUTPUT_MAX_AGE_S)
        return cls(
            model=model,
            revision=revision or os.environ.get("BRAIN_CT_MODEL_REVISION") or None,
            extra_models=_extra_models(),
            file_max_age_s=max_age,
            sweep_every_s=min(SWEEP_EVERY_S, max(max_age / 5, 0.5)),
            behind_proxy=bool(os.environ.get("SPACE_ID"))
            or os.environ.get("BRAIN_CT_BEHIND_PROXY", "") not in ("", "0"),
        )

    @property
    def output_dir(self) -> Path:
        """Overlays and reports, one fresh sub-folder per request."""
        return self.run_dir / "outputs"

    @property
    def gradio_cache(self) -> Path:
        """Gradio's upload cache, once :func:`main` has pointed ``GRADIO_TEMP_DIR`` here."""
        return self.run_dir / "gradio"


class ModelRegistry:
    """Predictors by model id: the default is loaded at start, extra ones on first use, all cached."""

    def __init__(self, default: str, extra: list[str] | None = None, revision: str | None = None) -> None:
        # Choices are the ids users see (a bundled model as models/<name>, not the server's path).
        self._sources = {shown_model_id(m): m for m in [*(extra or [])[::-1], default]}
        self.default = shown_model_id(default)
        self.revision = revision
        self.choices = list(dict.fromkeys([self.default, *(shown_model_id(m) for m in extra or [])]))
        self._cache: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str | None = None) -> Predictor:
        """The predictor of ``model_id`` (None: the default), loaded on first use; an unknown id or a
        model that cannot be loaded raises :class:`~brain_ct.errors.InvalidInputError`."""
        model_id = model_id or self.default
        if model_id not in self.choices:
            raise InvalidInputError(f"unknown model {model_id!r}; choose one of {', '.join(self.choices)}")
        with self._lock:
            if model_id not in self._cache:
                try:
                    revision = self.revision if model_id == self.default else None
                    self._cache[model_id] = Predictor.from_pretrained(
                        self._sources[model_id], revision=revision
                    )
                except BrainCTError as exc:
                    # The loader's own message, without the traceback of a failed load.
                    raise InvalidInputError(str(exc)) from None
            return self._cache[model_id]

    def banner(self, model_id: str | None = None) -> str:
        """The page's "Model in use" line: the id, an ensemble's size, the demo warning or the training data."""
        settings = self.get(model_id).settings
        text = f"**Model in use:** `{settings.model_id}`"
        if settings.is_ensemble:
            n = len(settings.member_ids)
            text += f" (an ensemble of {n} models: P(hemorrhage) is their mean)"
        if settings.is_demo:
            text += f" — ⚠️ **{settings.demo_note}**; never use it on patients."
        elif settings.trained_on:
            text += f" — trained on {md_escape(str(settings.trained_on))}"
        return text


def make_registry(
    model: str | None = None, revision: str | None = None, extra: list[str] | None = None
) -> ModelRegistry:
    """The models of a server: ``model`` (None: env ``BRAIN_CT_MODEL``, then the bundled default) and ``extra``."""
    return ModelRegistry(resolve_model_id(model), extra, revision=revision)


# --------------------------------------------------------------------------- run folder


def sweep_outputs(
    settings: AppSettings,
    now: float | None = None,
    max_age_s: float | None = None,
    keep: list[Path] | tuple[Path, ...] = (),
) -> None:
    """Delete this run's outputs (overlays, reports) and the files in Gradio's upload cache (uploads,
    partial files of aborted uploads, image outputs) older than ``max_age_s`` (default
    ``settings.file_max_age_s``), except ``keep`` (the examples' cached copies)."""
    age = settings.file_max_age_s if max_age_s is None else max_age_s
    sweep_folder(settings.output_dir, age, now)
    sweep_folder(settings.gradio_cache, age, now, keep=keep)


def remove_run_dir(settings: AppSettings) -> None:
    """Remove everything this run wrote (at exit, and on SIGTERM/SIGINT)."""
    shutil.rmtree(settings.run_dir, ignore_errors=True)


def prepare_run_dir(settings: AppSettings) -> None:
    """Sweep the folders of dead runs, create this run's folder, point Gradio's cache into it and
    remove it at exit.

    Gradio reads ``GRADIO_TEMP_DIR`` when each component is built and when the server starts
    (``gradio.utils.get_upload_folder``): call this before :func:`create_app`.
    """
    removed = sweep_dead_runs(settings.run_dir.parent)
    if removed:
        log.info("removed %d folder(s) left by earlier runs", len(removed))
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(settings.gradio_cache)
    atexit.register(remove_run_dir, settings)


def start_sweeper(settings: AppSettings, keep: list[Path] | tuple[Path, ...] = ()) -> threading.Event:
    """A daemon thread sweeping old files every ``settings.sweep_every_s`` (see :func:`sweep_outputs`),
    even while nobody asks for a report; set the returned event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.sweep_every_s):
            try:
                sweep_outputs(settings, keep=keep)
            except OSError as exc:  # a sweep must never kill the thread
                log.warning("file sweep failed: %s", exc)

    threading.Thread(target=loop, name="brain_ct-sweeper", daemon=True).start()
    return stop


def output_folder(settings: AppSettings) -> Path:
    """A fresh folder for one request's outputs: identical concurrent requests never share a file."""
    folder = settings.output_dir / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


# --------------------------------------------------------------------------- start-up


def example_files() -> list[str]:
    """The app's one-click examples: synthetic phantoms made by the project, and real CT slices."""
    files = sorted(
        str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in (*DICOM_SUFFIXES, *IMAGE_SUFFIXES)
    )
    files += [str(p) for p in REAL_EXAMPLE_FILES if p.is_file()]
    try:
        from pydicom.data import get_testdata_file

        files += [str(get_testdata_file(name)) for name in REAL_EXAMPLES]
    except Exception:  # pydicom's real slices are a bonus; the app works without them
        pass
    return files


def warm_up(registry: ModelRegistry) -> None:
    """Load the default model and read one synthetic DICOM through the whole path, so the first user does not wait."""
    buffer = io.BytesIO()
    dcmwrite(buffer, to_dicom(generate_slice(0, 256, hemorrhage=False)), enforce_file_format=True)
    registry.get().predict(buffer.getvalue())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python app.py`` (defaults from ``BRAIN_CT_MODEL_REVISION``, ``GRADIO_SERVER_*``)."""
    parser = argparse.ArgumentParser(description="Brain-CT hemorrhage reading assistant (Gradio app)")
    parser.add_argument(
        "--model", default=None, help="Hub id or folder; default env BRAIN_CT_MODEL, then the demo"
    )
    parser.add_argument(
        "--revision",
        default=os.environ.get("BRAIN_CT_MODEL_REVISION") or None,
        help="Hub revision of the model; a commit hash pins it (default: env BRAIN_CT_MODEL_REVISION)",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also create a public share link")
    parser.add_argument(
        "--mcp", action="store_true", help="also serve the prediction as an MCP tool (gradio[mcp])"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show other libraries' INFO log lines (httpx, fontTools, …)",
    )
    return parser.parse_args(argv)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    # Docker and Spaces stop a container with SIGTERM, which skips atexit: turn it into the same
    # KeyboardInterrupt as Ctrl-C, so Gradio closes its server and main() removes the run folder.
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Let SIGTERM and SIGINT stop the server as Ctrl-C does (see :func:`_raise_keyboard_interrupt`)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_keyboard_interrupt)


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be listened on now (Gradio would fail with a raw OSError)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def exit_if_port_busy(host: str, port: int) -> None:
    """Exit with status 2 and a message saying what to do when ``port`` on ``host`` is taken."""
    if not port_free(host, port):
        print(
            f"Port {port} on {host} is already in use (another app or an earlier run of this "
            "one?). Stop it, or start this one on another port: python app.py --port 7861",
            file=sys.stderr,
        )
        raise SystemExit(2)
