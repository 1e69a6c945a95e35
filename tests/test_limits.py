"""brain_ct.limits: the upload budget, its environment variables and the CLI's --max-slices."""

from __future__ import annotations

import argparse

import pytest

from brain_ct import limits
from brain_ct.cli.common import add_reading_arguments
from brain_ct.errors import InvalidInputError
from brain_ct.limits import UploadLimits


@pytest.fixture(autouse=True)
def _process_limits_restored():
    previous = limits.configure(None)
    yield
    limits.configure(previous)


def test_default_scan_limit_is_said_in_slices_of_512():
    # the pixel cap (128 slices of 512²) binds before the 300-slice cap
    assert UploadLimits().scan_limit_text() == "at most 128 slices of 512 × 512"
    assert UploadLimits().scan_slices_allowed(256, 256) == 300
    assert UploadLimits().scan_limit_text(740, 740) == "at most 61 slices of 740 × 740"


def test_check_scan_refuses_with_the_limit_that_binds():
    budget = UploadLimits()
    budget.check_scan(128, 128 * 512 * 512, 512, 512, "the zip")
    with pytest.raises(
        InvalidInputError, match=r"the zip holds 300 slices of 512 × 512 .*at most 128 slices"
    ):
        budget.check_scan(300, 300 * 512 * 512, 512, 512, "the zip")
    with pytest.raises(InvalidInputError, match=r"at most 300 slices of 128 × 128"):
        budget.check_scan(301, 301 * 128 * 128, 128, 128, "folder")


def test_environment_variables_raise_each_limit():
    env = {
        "BRAIN_CT_MAX_SCAN_SLICES": "400",
        "BRAIN_CT_MAX_SCAN_PIXELS": "104_857_600",
        "BRAIN_CT_MAX_SECONDS": "2.5",
    }
    budget = UploadLimits.from_env(env)
    assert (budget.max_scan_slices, budget.max_scan_pixels, budget.max_seconds) == (400, 104_857_600, 2.5)
    assert budget.scan_limit_text() == "at most 400 slices of 512 × 512"
    assert UploadLimits.from_env({}) == UploadLimits()


@pytest.mark.parametrize("value", ["many", "-5", "0", "1e3"])
def test_a_bad_environment_variable_is_named(value):
    with pytest.raises(InvalidInputError, match="BRAIN_CT_MAX_SCAN_SLICES"):
        UploadLimits.from_env({"BRAIN_CT_MAX_SCAN_SLICES": value})


def test_current_reads_the_environment_unless_configured(monkeypatch):
    monkeypatch.setenv("BRAIN_CT_MAX_SCAN_SLICES", "450")
    assert limits.current().max_scan_slices == 450
    limits.configure(UploadLimits(max_scan_slices=12))
    assert limits.current().max_scan_slices == 12


def test_with_slices_only_raises():
    raised = UploadLimits().with_slices(400)
    assert raised.scan_limit_text() == "at most 400 slices of 512 × 512"
    assert raised.max_voxels >= 400 * 512 * 512 and raised.max_request_bytes >= 400 * (3 << 20)
    assert UploadLimits().with_slices(10) == UploadLimits()


def test_cli_max_slices_raises_the_process_limits():
    parser = argparse.ArgumentParser()
    add_reading_arguments(parser)
    args = parser.parse_args([])
    assert args.max_slices is None and limits.current() == UploadLimits()
    args = parser.parse_args(["--max-slices", "320"])
    assert args.max_slices == 320
    assert limits.current().scan_limit_text() == "at most 320 slices of 512 × 512"
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-slices", "0"])


def test_using_sets_the_limits_of_one_block_only():
    own = UploadLimits(max_scan_slices=7)
    with limits.using(own) as inside:
        assert inside is own and limits.current() is own
        with limits.using(None) as unchanged:
            assert unchanged is own
    assert limits.current() == UploadLimits()
