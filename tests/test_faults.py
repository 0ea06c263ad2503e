"""Faults during a run (issue 5): signals, read-only folders, full disks, NaN, two runs.

Whatever happens, every output in the GIF folder is either its complete old version
or its complete new one, no temporary file is left behind, the GIFs are untouched,
and the next run works.
"""

import builtins
import csv
import errno
import fcntl
import io
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, SCRIPT, run_main, sha256
from PIL import Image

import extract_latent_vectors as tool

SIGNALS = [signal.SIGINT, signal.SIGTERM]


# -----------------------------------------------------------------------------------
# helpers


def write_gif(path, n_frames=6, size=16, seed=0):
    """A small grey movie of drifting stripes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    phase, scale = rng.uniform(0, 2 * np.pi), size / 6
    frames = [Image.fromarray((127 + 120 * np.sin(x / scale + y / (1.5 * scale)
                                                  + phase + t)).astype(np.uint8), "L")
              for t in range(n_frames)]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:])
    return path


def snapshot(folder):
    """Hashes of every file in the folder but the lock (GIFs included)."""
    return {p.name: sha256(p) for p in folder.iterdir()
            if p.is_file() and p.name != tool.LOCK_FILE}


def assert_whole(path, n_gifs):
    """The output file is complete: it parses to the end with the expected size."""
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            header, *rows = list(csv.reader(fh))
        assert len(rows) == n_gifs, path
        assert all(len(row) == len(header) for row in rows), path
        z = header.index("z0")
        assert all(float(v) == float(v) for row in rows for v in row[z:z + 4]), path
    elif path.suffix == ".png":
        with Image.open(path) as image:
            image.load()
    elif path.suffix == ".pth":
        checkpoint = torch.load(path, weights_only=True)
        tool.build_model(checkpoint["settings"]).load_state_dict(checkpoint["model"])
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as cache:
            assert len(cache["latents"]) == n_gifs, path
    else:
        raise AssertionError(f"unexpected file {path}")


def assert_old_or_whole(folder, before, n_gifs):
    """Each file is its old version or a complete new one; GIFs are untouched."""
    assert not list(folder.glob(".*.tmp")), "a temporary file was left behind"
    after = snapshot(folder)
    assert set(before) <= set(after), "a file disappeared"
    for name, digest in after.items():
        if name.endswith(".gif"):
            assert digest == before.get(name, digest), f"{name} was modified"
        elif before.get(name) != digest:
            assert_whole(folder / name, n_gifs)


def outputs(folder):
    return {name for name in snapshot(folder) if not name.endswith(".gif")}


def errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def make_template(folder, n_gifs, size=16, n_frames=6, n_distinct=4):
    """GIFs plus the outputs of one complete run: the 'old' state of a folder."""
    bases = [write_gif(folder / f"base{i}.gif", n_frames, size, seed=i)
             for i in range(min(n_distinct, n_gifs))]
    for i in range(n_gifs):
        name = f"GrayScott-f0.{100 + i:04d}-k0.0600-00.gif"
        shutil.copyfile(bases[i % len(bases)], folder / name)
    for base in bases:
        base.unlink()
    assert run_main(folder) == 0
    assert_old_or_whole(folder, {}, n_gifs)
    return folder


@pytest.fixture(scope="module")
def small_template(tmp_path_factory):
    """Four tiny GIFs and the outputs of a run on them."""
    return make_template(tmp_path_factory.mktemp("small"), 4)


BIG_GIFS = 64  # of the users' size: about half a second of decoding on 2 cores


@pytest.fixture(scope="module")
def big_template(tmp_path_factory):
    """BIG_GIFS GIFs of 128x128 pixels and 129 frames, and old outputs."""
    return make_template(tmp_path_factory.mktemp("big"), BIG_GIFS, size=128,
                         n_frames=129)


def copy_of(template, tmp_path):
    """A private copy (modification times kept, so the latent cache stays valid)."""
    return Path(shutil.copytree(template, tmp_path / "gif"))


class ScriptRun:
    """The script running in the background, its stderr read line by line."""

    def __init__(self, folder, *flags):
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--gif-dir", str(folder), *FAST, *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines, self.seen = queue.Queue(), []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text, timeout=120):
        """Block until a line of stderr contains text."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"the run ended before {text!r}:\n{self.stderr}")
            self.seen.append(line)
            if text in line:
                return

    def finish(self, timeout=120):
        """Wait for the end; returns the exit status (stderr is in self.stderr)."""
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        while (line := self.lines.get(timeout=10)) is not None:
            self.seen.append(line)
        return rc

    @property
    def stderr(self):
        return "".join(self.seen)


def assert_clean_interrupt(run, rc):
    assert rc == 130, run.stderr
    assert "interrupted: every output is either its old or its new version" in run.stderr
    assert "Traceback" not in run.stderr, run.stderr


# -----------------------------------------------------------------------------------
# signals


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_signal_while_decoding_keeps_old_outputs_and_next_run_works(
        big_template, tmp_path, signum):
    folder = copy_of(big_template, tmp_path)
    before = snapshot(folder)

    run = ScriptRun(folder, "--retrain")
    run.wait_for("GIFs in")  # logged just before the decoding starts
    time.sleep(0.1)  # let the decoding workers start, not finish
    os.killpg(run.proc.pid, signum)  # to the whole group, as Ctrl-C does
    rc = run.finish()

    assert_clean_interrupt(run, rc)
    assert "decoded" not in run.stderr, "the signal came after the decoding"
    assert snapshot(folder) == before
    assert_old_or_whole(folder, before, BIG_GIFS)
    assert run_main(folder) == 0
    assert_old_or_whole(folder, before, BIG_GIFS)


def test_signal_while_training_keeps_old_outputs_and_next_run_works(
        small_template, tmp_path):
    folder = copy_of(small_template, tmp_path)
    before = snapshot(folder)

    run = ScriptRun(folder, "--retrain", "--epochs", "5000")
    run.wait_for("training on")
    time.sleep(0.2)
    run.proc.send_signal(signal.SIGTERM)  # to the main process only, as `kill` does
    rc = run.finish()

    assert_clean_interrupt(run, rc)
    assert "wrote" not in run.stderr
    assert snapshot(folder) == before
    assert run_main(folder) == 0
    assert_old_or_whole(folder, before, 4)


def interrupt_while_writing(monkeypatch, target, signum):
    """Deliver signum to this process when target is half written."""
    real = tool.atomic_write

    def atomic_write(path, write):
        if Path(path).name != target:
            return real(path, write)

        def half_then_signal(fh):
            buffer = io.BytesIO()
            write(buffer)
            fh.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            fh.flush()
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises KeyboardInterrupt before this ends
            raise AssertionError("the signal was not delivered")

        return real(path, half_then_signal)

    monkeypatch.setattr(tool, "atomic_write", atomic_write)


@pytest.mark.parametrize("target, signum", [
    (tool.MODEL_FILE, signal.SIGINT),
    (tool.LATENT_CSV, signal.SIGTERM),
    (tool.COMBINED_CSV, signal.SIGINT),
    (tool.LOSS_PNG, signal.SIGTERM),
], ids=lambda v: getattr(v, "name", v))
def test_signal_while_writing_an_output_keeps_it_old_and_next_run_works(
        small_template, tmp_path, monkeypatch, target, signum):
    folder = copy_of(small_template, tmp_path)
    before = snapshot(folder)
    interrupt_while_writing(monkeypatch, target, signum)

    assert run_main(folder, "--retrain") == 130

    assert sha256(folder / target) == before[target]
    assert_old_or_whole(folder, before, 4)
    monkeypatch.undo()
    assert run_main(folder) == 0
    assert_old_or_whole(folder, before, 4)


# -----------------------------------------------------------------------------------
# a read-only folder and a full disk


def make_read_only(monkeypatch, folder):
    """chmod the folder 0o555; where that does not stop writes (root), also deny them.

    Returns True when the operating system itself refuses the writes.
    """
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.touch()
    except PermissionError:
        return True
    probe.unlink()  # root writes anyway: refuse what a read-only folder refuses

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def inside(path):
        return Path(path).resolve().parent == folder.resolve()

    def open_(file, mode="r", *args, **kwargs):
        if (isinstance(file, (str, os.PathLike)) and inside(file)
                and set(mode) & set("wax+") and not Path(file).exists()):
            raise denied(file)  # a new file; existing files keep their own mode
        return builtins.open(file, mode, *args, **kwargs)

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise denied(dir)
        return tempfile_mkstemp(*args, dir=dir, **kwargs)

    def guard(real):
        def call(src, *args, **kwargs):
            if inside(src) or any(inside(a) for a in args if isinstance(a, (str, Path))):
                raise denied(src)
            return real(src, *args, **kwargs)
        return call

    tempfile_mkstemp = tool.tempfile.mkstemp
    monkeypatch.setattr(tool, "open", open_, raising=False)
    monkeypatch.setattr(tool.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tool.os, "replace", guard(os.replace))
    monkeypatch.setattr(tool.os, "unlink", guard(os.unlink))
    return False


@pytest.mark.parametrize("earlier_run", [False, True], ids=["new folder", "rerun"])
def test_read_only_gif_folder_gives_a_clear_error_naming_it(
        small_template, tmp_path, monkeypatch, caplog, earlier_run):
    folder = copy_of(small_template, tmp_path)
    if not earlier_run:
        for name in outputs(folder) | {tool.LOCK_FILE}:
            (folder / name).unlink()
    before = snapshot(folder)
    names = sorted(p.name for p in folder.iterdir())
    try:
        refused_by_os = make_read_only(monkeypatch, folder)
        status = run_main(folder)
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)

    assert status == 2
    (error,) = errors(caplog)
    assert f"cannot write in {folder}" in error and "writable" in error
    assert sorted(p.name for p in folder.iterdir()) == names
    assert snapshot(folder) == before
    print(f"read-only folder refused by {'the OS' if refused_by_os else 'a mock'}")


class FullDisk(io.RawIOBase):
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, fh, room):
        self.fh, self.room = fh, room

    def writable(self):
        return True

    def write(self, data):
        data = bytes(data)
        if len(data) > self.room:
            self.fh.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fh.write(data)


@pytest.mark.parametrize("target", [tool.MODEL_FILE, tool.LATENT_CSV,
                                    tool.RECONSTRUCTIONS_PNG, tool.CACHE_FILE])
def test_full_disk_gives_a_clear_error_and_keeps_the_old_file(
        small_template, tmp_path, monkeypatch, caplog, target):
    folder = copy_of(small_template, tmp_path)
    before = snapshot(folder)
    real = tool.atomic_write

    def atomic_write(path, write):
        if Path(path).name != target:
            return real(path, write)
        return real(path, lambda fh: write(FullDisk(fh, room=100)))

    monkeypatch.setattr(tool, "atomic_write", atomic_write)

    assert run_main(folder, "--retrain") == 2

    (error,) = errors(caplog)
    assert f"cannot write {folder / target}: No space left on device" in error
    assert sha256(folder / target) == before[target]
    assert_old_or_whole(folder, before, 4)


# -----------------------------------------------------------------------------------
# a training run that breaks down


@pytest.mark.parametrize("flags, said", [
    (["--learning-rate", "1e30", "--batch-size", "1", "--epochs", "3"],
     "the training loss became nan"),
    (["--learning-rate", "1e30"], "latent vectors NaN or infinite"),
], ids=["loss turns NaN", "last step breaks the weights"])
def test_diverging_training_stops_and_keeps_the_old_model(
        small_template, tmp_path, caplog, flags, said):
    folder = copy_of(small_template, tmp_path)
    before = snapshot(folder)

    assert run_main(folder, "--retrain", *flags) == 2

    (error,) = errors(caplog)
    assert said in error and "the model was not saved" in error
    assert "--learning-rate" in error
    assert snapshot(folder) == before


def test_infinite_loss_stops_and_saves_no_model(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "gif"
    folder.mkdir()
    for i in range(4):
        write_gif(folder / f"GrayScott-f0.0{i + 2}00-k0.0600-00.gif", seed=i)
    real_loss, calls = tool.F.mse_loss, []

    def loss_that_explodes(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("inf") if len(calls) == 3 else loss

    monkeypatch.setattr(tool.F, "mse_loss", loss_that_explodes)

    assert run_main(folder, "--batch-size", "1") == 2

    (error,) = errors(caplog)
    assert "the training loss became inf in epoch 1" in error
    assert not (folder / tool.MODEL_FILE).exists()
    assert not list(folder.glob(".*.tmp"))


# -----------------------------------------------------------------------------------
# two runs at once


def test_second_run_on_a_locked_folder_is_refused(small_template, tmp_path, caplog):
    folder = copy_of(small_template, tmp_path)
    before = snapshot(folder)
    with open(folder / tool.LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running run holds it
        assert run_main(folder, "--retrain") == 2

    (error,) = errors(caplog)
    assert f"another run is working in {folder}" in error
    assert snapshot(folder) == before


def test_two_runs_at_once_do_not_mix_their_outputs(small_template, tmp_path, caplog):
    folder = copy_of(small_template, tmp_path)
    before = snapshot(folder)

    first = ScriptRun(folder, "--retrain", "--epochs", "30")
    first.wait_for("training on")
    second = run_main(folder, "--retrain")
    rc = first.finish()

    assert second == 2 and "another run is working" in errors(caplog)[0]
    assert rc == 0, first.stderr
    assert set(before) <= set(snapshot(folder))
    for name in outputs(folder):  # all written by the first run, complete
        assert_whole(folder / name, 4)
    assert sha256(folder / tool.MODEL_FILE) != before[tool.MODEL_FILE]
    assert not list(folder.glob(".*.tmp"))
