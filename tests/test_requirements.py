"""requirements.txt (what a Hugging Face Space installs) and requirements-dev.txt (offline/PyPI-only installs).

A Space reads only requirements.txt; it must bring PyTorch's CPU build. This machine reaches only PyPI
(and a local mirror), so requirements-dev.txt must carry the same packages without the CPU index.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def _lines(name: str) -> list[str]:
    return [
        line.strip()
        for line in (ROOT / name).read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_space_requirements_bring_the_cpu_torch_and_stand_alone():
    lines = _lines("requirements.txt")
    assert CPU_INDEX in lines
    assert not [line for line in lines if line.startswith(("-r", "-c"))]  # a Space reads only this file
    # No local label: the CPU index's 2.13.0+cpu wins over PyPI's 2.13.0, and macOS (no +cpu wheels) resolves.
    assert "torch==2.13.0" in lines


def test_dev_requirements_have_the_same_packages_without_the_cpu_index():
    space = [line for line in _lines("requirements.txt") if not line.startswith("-")]
    dev = _lines("requirements-dev.txt")
    assert not [line for line in dev if line.startswith("-")], "no index options or includes offline"
    missing = [line for line in space if line not in dev]
    assert not missing, f"requirements-dev.txt lacks {missing}"


def _fake_wheel(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


def _chosen(tmp_path: Path, *folders: Path) -> str:
    report = tmp_path / "report.json"
    links = [arg for folder in folders for arg in ("--find-links", str(folder))]
    subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--no-index", "--quiet"]
        + ["--ignore-installed", "--report", str(report), *links, "torch==2.13.0"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (item,) = json.loads(report.read_text())["install"]
    return item["metadata"]["version"]


@pytest.mark.slow
def test_pip_prefers_the_cpu_build_when_both_indexes_offer_torch(tmp_path):
    """What the Space relies on, checked offline: with PyPI's 2.13.0 and the CPU index's 2.13.0+cpu both
    available, ``torch==2.13.0`` installs 2.13.0+cpu; with PyPI alone it still resolves (2.13.0)."""
    pypi, cpu = tmp_path / "pypi", tmp_path / "cpu"
    _fake_wheel(pypi, "2.13.0")
    _fake_wheel(cpu, "2.13.0+cpu")
    assert _chosen(tmp_path, pypi, cpu) == "2.13.0+cpu"
    assert _chosen(tmp_path, pypi) == "2.13.0"


VENV = "python -m venv .venv && . .venv/bin/activate && "


def _quickstart_commands() -> list[str]:
    """The command lines of the README's Quickstart block, without their trailing comments."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quickstart\n") :]
    section = section[: section.index("\n## ", 1)]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_commands_each_in_a_virtual_environment():
    app, tests = _quickstart_commands()
    assert app == VENV + "pip install -r requirements.txt && python app.py"
    assert tests == VENV + "pip install -r requirements-dev.txt && python -m pytest"


def test_ci_runs_the_readmes_test_command():
    (ci,) = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    readme = _quickstart_commands()[1].removeprefix(VENV)
    assert ci.replace("python -m pip", "pip").replace(" -q", "") == readme
