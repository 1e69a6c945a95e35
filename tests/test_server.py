"""brain_ct.server: the settings of an app server, its model registry, its run folder and its start-up helpers."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import time

import pytest
from helpers_models import make_tiny_model

from brain_ct import server, serving
from brain_ct.errors import InvalidInputError


def test_run_folder_sweeps(tmp_path):
    dead = tmp_path / "run-999999999"
    alive = tmp_path / f"run-{os.getppid()}"
    dead.mkdir()
    alive.mkdir()
    removed = serving.sweep_dead_runs(tmp_path)
    assert removed == [dead] and not dead.exists() and alive.exists()
    settings = server.AppSettings(run_dir=tmp_path / f"run-{os.getpid()}")
    old = server.output_folder(settings)
    new = server.output_folder(settings)
    cache = settings.gradio_cache
    empty, full = cache / "empty-hash-folder", cache / "full-hash-folder"
    empty.mkdir(parents=True)
    full.mkdir()
    (full / "upload.dcm").write_bytes(b"x")
    example = cache / "example-hash-folder" / "example.dcm"
    example.parent.mkdir()
    example.write_bytes(b"x")
    partial = cache / "tmpabc123"  # an upload aborted half-way: Gradio's parser left it at the top
    partial.write_bytes(b"x")
    fresh = cache / "fresh-hash-folder" / "upload.dcm"
    fresh.parent.mkdir()
    fresh.write_bytes(b"x")
    for path in (old, empty, full, full / "upload.dcm", partial, example, example.parent):
        os.utime(path, (time.time() - 1000, time.time() - 1000))
    server.sweep_outputs(settings, keep=[example])
    assert not old.exists() and new.exists()
    assert not empty.exists() and not full.exists() and not partial.exists()
    assert example.exists() and fresh.exists()  # the examples' copies survive every sweep
    assert settings.output_dir.parent == settings.gradio_cache.parent == settings.run_dir
    server.remove_run_dir(settings)
    assert not settings.run_dir.exists() and alive.exists()


def test_prepare_run_dir_points_gradio_into_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", "unchanged")
    monkeypatch.setattr(atexit, "register", lambda *a: None)  # the test removes it itself
    dead = tmp_path / "run-999999999"
    dead.mkdir()
    settings = server.AppSettings(run_dir=tmp_path / f"run-{os.getpid()}")
    server.prepare_run_dir(settings)
    assert settings.run_dir.is_dir() and not dead.exists()
    assert os.environ["GRADIO_TEMP_DIR"] == str(settings.gradio_cache)
    server.remove_run_dir(settings)


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("BRAIN_CT_FILE_MAX_AGE_S", "10")
    monkeypatch.setenv("BRAIN_CT_MODEL_REVISION", "abc123")
    monkeypatch.setenv("BRAIN_CT_MODELS", " a/one , ,b/two")
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("BRAIN_CT_BEHIND_PROXY", "0")
    settings = server.AppSettings.from_env(model="m")
    assert (
        settings.model == "m"
        and settings.revision == "abc123"
        and settings.extra_models == ["a/one", "b/two"]
    )
    assert settings.file_max_age_s == 10 and settings.sweep_every_s == 2 and not settings.behind_proxy
    assert server.AppSettings.from_env(revision="pinned").revision == "pinned"
    monkeypatch.setenv("SPACE_ID", "someone/space")
    assert server.AppSettings.from_env().behind_proxy


def test_the_run_folder_is_named_per_process_under_brain_ct_tmp(monkeypatch, tmp_path):
    monkeypatch.setenv("BRAIN_CT_TMP", str(tmp_path))
    assert server.default_run_dir() == tmp_path / "brain_ct_app" / f"run-{os.getpid()}"
    assert not server.default_run_dir().exists()


def test_the_registry_loads_once_and_refuses_unknown_or_broken_models(tmp_path):
    model = str(make_tiny_model(tmp_path / "tiny", trained_on="synthetic phantoms"))
    broken = tmp_path / "broken"
    broken.mkdir()
    registry = server.ModelRegistry(model, [str(broken)])
    assert registry.choices == [model, str(broken)] and registry.default == model
    assert registry.get() is registry.get(model)
    assert "trained on synthetic phantoms" in registry.banner()
    with pytest.raises(InvalidInputError, match="unknown model 'nope'; choose one of"):
        registry.get("nope")
    with pytest.raises(InvalidInputError) as failed:
        registry.get(str(broken))
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


def test_the_command_line_defaults(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = server.parse_args([])
    assert (args.host, args.port, args.model, args.share, args.mcp) == ("127.0.0.1", 7999, None, False, False)
    assert server.parse_args(["--model", "x", "--port", "1"]).model == "x"


def test_a_busy_port_exits_with_status_2_and_says_what_to_do(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not server.port_free("127.0.0.1", port)
        with pytest.raises(SystemExit) as stopped:
            server.exit_if_port_busy("127.0.0.1", port)
    assert stopped.value.code == 2 and "--port 7861" in capsys.readouterr().err


def test_sigterm_stops_the_server_as_ctrl_c_does():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.stop_on_signals()
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_the_examples_are_the_phantoms_and_the_real_slices():
    files = server.example_files()
    names = [os.path.basename(f) for f in files]
    assert "synthetic_subdural.dcm" in names and all(os.path.isfile(f) for f in files)
    assert set(server.REAL_EXAMPLES) <= set(names)
