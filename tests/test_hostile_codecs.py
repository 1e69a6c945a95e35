"""Codec bombs inside DICOM (issue 14.1): refused before decoding, in bounded memory and time.

The hostile files come from ``tests/hostile.py`` (seeded, built in code). Memory is measured in a
fresh subprocess (peak RSS of the process doing the work, and of its decoding workers), with a
generous bar; without the fences these files cost 2.4-2.7 GB (measured under a 3 GB limit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hostile import SIDE, j2k_with_siz, jpeg_with_sof, make_hostile_files
from pydicom.data import get_testdata_file
from pydicom.pixels import pixel_array

from brain_ct import decode_guard
from brain_ct.dicom import read_dicom_header
from brain_ct.errors import InvalidInputError
from brain_ct.io import load_frames, load_image

REPO = Path(__file__).resolve().parents[1]

#: The issue's bar for the peak RSS of any process handling one upload.
PEAK_RSS_LIMIT_MB = 1536

#: Seconds a refusal may take (they are all refused before any decoding).
REFUSAL_SECONDS = 20


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_hostile_files(tmp_path_factory.mktemp("hostile"), seed=0)


def _run_measured(script: str, *args: str, cwd: Path) -> dict:
    """Run ``script`` in a fresh Python; it fills ``result``, printed as JSON with peak RSS (MB) added.

    ``workers_peak_rss_mb`` is the largest decoding worker's peak (they are this process's children).
    """
    footer = textwrap.dedent(
        """
        import resource as _r
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest) across exec.
        with open("/proc/self/status") as _f:
            _hwm = next(line for line in _f if line.startswith("VmHWM:"))
        result["peak_rss_mb"] = int(_hwm.split()[1]) / 1024
        from brain_ct import decode_guard as _g
        _g.shutdown_workers()
        result["workers_peak_rss_mb"] = _r.getrusage(_r.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps(result))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script) + footer, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- frame headers


def test_frame_header_reads_what_the_encoders_wrote() -> None:
    j2k = decode_guard.frame_header(j2k_with_siz(700, 300))
    assert (j2k.codec, j2k.rows, j2k.columns, j2k.components, j2k.tiles) == ("JPEG 2000", 300, 700, 1, 1)
    jpeg = decode_guard.frame_header(jpeg_with_sof(640, 480))
    assert (jpeg.codec, jpeg.rows, jpeg.columns, jpeg.components) == ("JPEG", 480, 640, 1)
    ds = pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    ls = decode_guard.frame_header(pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1))
    assert (ls.codec, ls.rows, ls.columns) == ("JPEG-LS", int(ds.Rows), int(ds.Columns))
    assert decode_guard.frame_header(b"\x00" * 64) is None  # RLE or damaged data: left to the fence


@pytest.mark.parametrize(
    "name", ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_dcmtk.dcm"]
)
def test_frame_headers_of_real_files_agree_with_their_dicom_header(name: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    frame = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames") or 1))
    header = decode_guard.frame_header(frame)
    assert header is not None
    assert (header.rows, header.columns, header.components) == (ds.Rows, ds.Columns, ds.SamplesPerPixel)
    decode_guard.check_frame_header(frame, ds.Rows, ds.Columns, ds.SamplesPerPixel, name)


def test_too_many_j2k_tiles_are_refused() -> None:
    stream = bytearray(j2k_with_siz(SIDE, SIDE))
    stream[24:32] = (1).to_bytes(4, "big") * 2  # 1 x 1 pixel tiles: 262144 of them
    with pytest.raises(InvalidInputError, match="262144 tiles"):
        decode_guard.check_frame_header(bytes(stream), SIDE, SIDE, 1, "tiles.dcm")


# --------------------------------------------------------------------------- the bombs


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("j2k_siz_bomb", "JPEG 2000 data declares a 20000x20000 image"),
        ("j2k_siz_mismatch", "JPEG 2000 data declares a 1024x1024 image"),
        ("jpeg_sof_bomb", "JPEG data declares a 65000x65000 image"),
        ("jpeg_ls_sof55_bomb", "JPEG-LS data declares a 65000x65000 image"),
        ("deflate_bomb", "inflates to more than 72 MiB"),
    ],
)
def test_codec_bomb_is_refused_with_a_clear_message(hostile: dict[str, Path], key: str, match: str) -> None:
    start = time.perf_counter()
    for reader in (load_image, load_frames, lambda p: load_image(p, allow_unverified=True)):
        with pytest.raises(InvalidInputError, match=match) as info:
            reader(hostile[key])
        assert str(info.value).startswith(f"{key}.dcm: ")
    assert time.perf_counter() - start < REFUSAL_SECONDS


def test_a_header_read_of_a_deflate_bomb_inflates_only_the_header(hostile: dict[str, Path]) -> None:
    import tracemalloc

    data = hostile["deflate_bomb"].read_bytes()
    tracemalloc.start()
    try:
        header = read_dicom_header(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert header.Rows == 512 and "PixelData" not in header
    assert peak < len(data) + (16 << 20), peak  # the 384 MiB of zeros after the pixels stay deflated


def test_codec_bombs_stay_within_the_memory_bar(hostile: dict[str, Path], tmp_path: Path) -> None:
    script = """
        import json, sys, time
        from brain_ct.errors import InvalidInputError
        from brain_ct.dicom import read_dicom_header
        from brain_ct.io import load_frames, load_image
        from brain_ct.series import read_series
        result = {"outcomes": {}}
        start = time.perf_counter()
        for path in sys.argv[1:]:
            for name, fn in (("load_image", load_image), ("load_frames", load_frames),
                             ("read_dicom_header", read_dicom_header), ("read_series", read_series)):
                try:
                    fn(path)
                    outcome = "accepted"
                except InvalidInputError:
                    outcome = "InvalidInputError"
                except BaseException as exc:
                    outcome = type(exc).__name__
                result["outcomes"][path.rsplit("/", 1)[-1] + " " + name] = outcome
        result["seconds"] = time.perf_counter() - start
    """
    result = _run_measured(script, *(str(p) for p in hostile.values()), cwd=tmp_path)
    outcomes = result["outcomes"]
    refused = {k: v for k, v in outcomes.items() if not k.endswith("read_dicom_header")}
    assert set(refused.values()) == {"InvalidInputError"}, outcomes
    # a header read inflates only the header: the zeros after the pixels are never reached
    assert outcomes["deflate_bomb.dcm read_dicom_header"] == "accepted"
    print(
        f"codec bombs: peak RSS {result['peak_rss_mb']:.0f} MB (workers {result['workers_peak_rss_mb']:.0f} MB), "
        f"{result['seconds']:.1f} s for {len(outcomes)} reads"
    )
    assert result["peak_rss_mb"] < PEAK_RSS_LIMIT_MB
    assert result["workers_peak_rss_mb"] < PEAK_RSS_LIMIT_MB
    assert result["seconds"] < 4 * REFUSAL_SECONDS


# --------------------------------------------------------------------------- the second fence


def test_decoder_bomb_past_the_header_check_is_stopped_by_the_worker_cap(
    hostile: dict[str, Path], tmp_path: Path
) -> None:
    # Pretend the header check missed it (an unknown codec bug): the capped worker must still
    # refuse it, this process must stay small, and the next file must decode normally.
    script = """
        import json, sys
        from brain_ct import decode_guard
        from brain_ct.errors import InvalidInputError
        from brain_ct.io import load_image
        decode_guard.check_frame_header = lambda *args: None
        result = {}
        try:
            load_image(sys.argv[1])
            result["bomb"] = "accepted"
        except InvalidInputError as exc:
            result["bomb"] = str(exc)
        ct = load_image(sys.argv[2])
        result["next_shape"] = list(ct.hu.shape)
    """
    result = _run_measured(
        script, str(hostile["j2k_siz_bomb"]), get_testdata_file("693_J2KI.dcm"), cwd=tmp_path
    )
    assert result["bomb"].startswith("j2k_siz_bomb.dcm: ")
    assert "damaged or hostile" in result["bomb"] or "cannot be decoded" in result["bomb"]
    assert result["next_shape"] == [512, 512]
    print(
        f"worker fence: server peak RSS {result['peak_rss_mb']:.0f} MB, "
        f"worker peak RSS {result['workers_peak_rss_mb']:.0f} MB"
    )
    assert result["peak_rss_mb"] < 300  # the decoding happened elsewhere
    assert result["workers_peak_rss_mb"] < PEAK_RSS_LIMIT_MB


def test_worker_timeout_stops_the_worker_and_the_next_decode_works(monkeypatch) -> None:
    ds = pydicom.dcmread(get_testdata_file("J2K_pixelrep_mismatch.dcm"))
    monkeypatch.setattr(decode_guard, "DECODE_TIMEOUT_S", 0.0)
    with pytest.raises(InvalidInputError, match="longer than 0 s"):
        decode_guard.decode_frame(ds, 0, 1, "slow.dcm")
    monkeypatch.setattr(decode_guard, "DECODE_TIMEOUT_S", 30.0)
    np.testing.assert_array_equal(decode_guard.decode_frame(ds, 0, 1, "slow.dcm"), pixel_array(ds))


def test_a_large_image_decodes_in_a_worker_under_the_same_time_limit(monkeypatch) -> None:
    import cv2

    image = np.tile(np.arange(2600, dtype=np.uint16)[None, :] * 25, (2100, 1))
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    monkeypatch.setattr(decode_guard, "DECODE_TIMEOUT_S", 0.0)
    with pytest.raises(InvalidInputError, match=r"big\.png: decoding the PNG image took longer than 0 s"):
        decode_guard.decode_image(encoded.tobytes(), "PNG", False, 2100, 2600, 2048, "big.png")
    monkeypatch.setattr(decode_guard, "DECODE_TIMEOUT_S", 30.0)
    reduced, decoded, factor = decode_guard.decode_image(
        encoded.tobytes(), "PNG", False, 2100, 2600, 2048, "big.png"
    )
    assert (reduced.shape, reduced.dtype, decoded, factor) == ((1654, 2048), np.uint16, (2100, 2600), 1)
    expected = cv2.resize(image, (2048, 1654), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(reduced, expected)


def test_a_damaged_large_image_is_refused_by_the_worker_with_a_message() -> None:
    header = b"\x89PNG\r\n\x1a\n" + bytes(200)
    with pytest.raises(InvalidInputError, match=r"x\.png: the PNG file cannot be decoded"):
        decode_guard.decode_image(header, "PNG", False, 3000, 3000, 2048, "x.png")


@pytest.mark.parametrize(("side", "factor"), [(2048, 1), (2049, 2), (4096, 2), (4097, 4), (20000, 8)])
def test_jpeg_scale_is_the_smallest_that_fits(side: int, factor: int) -> None:
    assert decode_guard.jpeg_factor(side, 100, 2048) == factor


COMPRESSED_FILES = [
    "693_J2KI.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_RLE.dcm",
    "JPGExtended.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_rle_2frame.dcm",  # two frames
]


@pytest.mark.parametrize("name", COMPRESSED_FILES)
def test_worker_decodes_exactly_as_pydicom(name: str) -> None:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in this pydicom's test data")
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames") or 1)
    for index in sorted({0, frames - 1}):
        expected = pixel_array(ds, index=index) if frames > 1 else pixel_array(ds)
        got = decode_guard.decode_frame(ds, index, frames, name)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_concurrent_threads_share_the_workers_safely() -> None:
    import threading

    files = ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "MR_small_jpeg_ls_lossless.dcm"]
    datasets = [pydicom.dcmread(get_testdata_file(name)) for name in files]
    expected = [pixel_array(ds) for ds in datasets]
    failures: list[str] = []

    def run(k: int) -> None:
        for round_ in range(4):
            i = (k + round_) % len(datasets)
            got = decode_guard.decode_frame(datasets[i], 0, 1, files[i])
            if got.dtype != expected[i].dtype or not np.array_equal(got, expected[i]):
                failures.append(f"thread {k}: {files[i]} decoded differently")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2 * decode_guard.DECODE_WORKERS + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    assert decode_guard._slots.qsize() == decode_guard.DECODE_WORKERS  # every worker was given back


def _worker_pids() -> set[int]:
    return {w.process.pid for w in list(decode_guard._slots.queue) if w is not None}


def _decode_in_child(path: str, queue) -> None:
    ds = pydicom.dcmread(path)
    shape = decode_guard.decode_frame(ds, 0, 1, "child.dcm").shape
    queue.put((shape, _worker_pids()))


def test_forked_child_gets_its_own_workers() -> None:
    import multiprocessing

    path = get_testdata_file("693_J2KI.dcm")
    ds = pydicom.dcmread(path)
    decode_guard.decode_frame(ds, 0, 1, "parent.dcm")  # the parent's worker is running
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [context.Process(target=_decode_in_child, args=(path, results)) for _ in range(2)]
    for child in children:
        child.start()
    replies = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
    assert [shape for shape, _ in replies] == [(512, 512), (512, 512)]
    parents = _worker_pids()
    assert parents and all(pids and not pids & parents for _, pids in replies)  # never shared pipes
    assert all(child.exitcode == 0 for child in children)
    np.testing.assert_array_equal(decode_guard.decode_frame(ds, 0, 1, "parent.dcm"), pixel_array(ds))


def test_small_deflated_file_still_reads(tmp_path: Path) -> None:
    files = make_hostile_files(tmp_path, seed=1, deflate_bytes=1 << 20)  # 1 MiB hidden: within the cap
    ct = load_image(files["deflate_bomb"], allow_unverified=True)
    assert ct.hu.shape == (SIDE, SIDE)
    assert ct.meta["TransferSyntax"] == "Deflated Explicit VR Little Endian"
    header = read_dicom_header(get_testdata_file("image_dfl.dcm"))  # pydicom's own deflated file
    assert header.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    assert header.Rows > 0


def test_damaged_deflate_stream_is_refused(tmp_path: Path) -> None:
    files = make_hostile_files(tmp_path, seed=2, deflate_bytes=1 << 20)
    data = bytearray(files["deflate_bomb"].read_bytes())
    data[400:800] = b"\xff" * 400
    with pytest.raises(InvalidInputError, match="deflated DICOM data is damaged"):
        load_image(bytes(data), name="broken.dcm")


def test_a_deflated_header_longer_than_the_prefix_is_read_whole(tmp_path: Path) -> None:
    from helpers_dicom import ct_dataset, dicom_bytes
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = ct_dataset(np.full((64, 64), 1000, np.int16))
    ds.add_new(0x00091010, "OB", np.random.default_rng(0).bytes(3 << 20))  # 3 MiB before the pixels
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = read_dicom_header(dicom_bytes(ds))
    assert header.Rows == 64 and len(header[0x00091010].value) == 3 << 20
    assert "PixelData" not in header
