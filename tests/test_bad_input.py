"""Bad GIFs, bad clustering files and untrusted model files (issue 5).

Each test feeds one kind of bad input to the tool and checks what the user sees: the
run goes on with one warning per bad file, or stops with one clear error; nothing the
user owns is modified, and nothing foreign is executed.
"""

import csv
import io
import logging
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, SCRIPT, run_main, sha256
from conftest import REPO as ROOT
from PIL import Image, ImageSequence

import extract_latent_vectors as tool

# -----------------------------------------------------------------------------------
# helpers


def write_gif(path, n_frames=6, size=(16, 16), seed=0, noise=False):
    """A small grey movie: drifting stripes, or noise (which compresses badly)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: size[1], : size[0]]
    phase = rng.uniform(0, 2 * np.pi)
    frames = []
    for t in range(n_frames):
        if noise:
            pixels = rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)
        else:
            pixels = (127 + 120 * np.sin(x / 2.5 + y / 4 + phase + t)).astype(np.uint8)
        frames.append(Image.fromarray(pixels, "L"))
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:])
    return path


def gif_bytes(**kwargs):
    """The bytes of a GIF made by write_gif."""
    buffer = io.BytesIO()
    write_gif(buffer, **kwargs)
    return buffer.getvalue()


def with_canvas(data, width, height):
    """The same GIF with another canvas size written in its header."""
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def frame_offsets(path):
    """Where each frame's compressed pixels start in the file."""
    with Image.open(path) as gif:
        offsets = []
        for index in range(gif.n_frames):
            gif.seek(index)
            offsets.append(gif.tile[0][2])
    return offsets


def pixels_end(data, start):
    """Where the compressed pixels that begin at start end (their 0 terminator)."""
    end = start
    while data[end]:  # the pixels are sub-blocks, each led by its length
        end += 1 + data[end]
    return end


def cut_in_frame(source, target, frame):
    """Copy a GIF, cut off in the middle of the pixels of frame (0-based)."""
    data = Path(source).read_bytes()
    start = frame_offsets(source)[frame]
    cut = (start + pixels_end(data, start)) // 2
    Path(target).write_bytes(data[:cut])
    return target


def png_bytes():
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 200).save(buffer, "PNG")
    return buffer.getvalue()


# every kind of file the loader must skip: name -> (bytes, words of the reason)
BAD_FILES = {
    "empty.gif": (b"", "empty"),
    "random bytes.gif": (random.Random(5).randbytes(3000), "not a GIF"),
    "picture.gif": (png_bytes(), "not a GIF"),
    "notes.gif": (b"f=0.05 k=0.06\nthis is a text file\n", "not a GIF"),
    "bomb.gif": (with_canvas(gif_bytes(), 60000, 60000), "decompression bomb"),
    "zero-size.gif": (with_canvas(gif_bytes(), 0, 0), "0x0"),
}


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def messages(caplog, level=logging.WARNING):
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder of four GIFs after one complete run (model and outputs written)."""
    folder = tmp_path_factory.mktemp("trained")
    for i in range(4):
        write_gif(folder / f"GrayScott-f0.0{i + 2}00-k0.0600-00.gif", seed=i)
    assert run_main(folder) == 0
    return folder


@pytest.fixture
def trained_copy(trained, tmp_path):
    """A private copy of the trained folder (times kept, so the cache stays valid)."""
    return Path(shutil.copytree(trained, tmp_path / "gif"))


# -----------------------------------------------------------------------------------
# bad GIFs


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_loader_refuses_each_bad_file_with_its_reason(tmp_path, name):
    data, reason = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(tool.GifError, match=reason):
        tool.read_movie(path, 8, 16)


def test_gif_cut_in_a_frame_keeps_the_frames_before_the_cut_and_says_which(tmp_path):
    whole = write_gif(tmp_path / "whole.gif", n_frames=10, noise=True)
    cut = cut_in_frame(whole, tmp_path / "cut.gif", frame=6)

    movie, note = tool.read_movie(cut, 8, 16)

    assert note == "the file is damaged after frame 6; using frames 1-6"
    with Image.open(whole) as gif:
        frames = [tool.frame_to_grey(f, 16) for f in ImageSequence.Iterator(gif)]
    expected = np.stack([frames[i] for i in tool.frame_indices(6, 8)])
    assert np.array_equal(movie, expected)


def test_gif_cut_anywhere_in_frame_5_keeps_frames_1_to_4(tmp_path):
    whole = write_gif(tmp_path / "whole.gif", n_frames=10, noise=True)
    data = whole.read_bytes()
    offsets = frame_offsets(whole)
    block = pixels_end(data, offsets[3]) + 1  # frame 5's extension and descriptor
    cuts = [*range(block + 1, block + 30),  # byte by byte through its header
            *range(block + 30, offsets[4], 37),  # its palette
            *range(offsets[4], pixels_end(data, offsets[4]), 5)]  # its pixels
    with Image.open(whole) as gif:
        frames = [tool.frame_to_grey(f, 16) for f in ImageSequence.Iterator(gif)]
    expected = np.stack([frames[i] for i in tool.frame_indices(4, 8)])
    cut = tmp_path / "cut.gif"

    for size in cuts:
        cut.write_bytes(data[:size])
        movie, note = tool.read_movie(cut, 8, 16)
        assert "frames 1-4" in note or "the 4 frames" in note, (size, note)
        assert np.array_equal(movie, expected), size


def test_gif_cut_between_frames_is_used_with_a_note(tmp_path):
    whole = write_gif(tmp_path / "whole.gif", n_frames=10, noise=True)
    data = whole.read_bytes()
    end = pixels_end(data, frame_offsets(whole)[3])
    cut = tmp_path / "cut.gif"
    cut.write_bytes(data[: end + 1])  # frames 1-4 complete, no more

    movie, note = tool.read_movie(cut, 8, 16)

    assert movie.shape == (8, 16, 16)
    assert "cut short" in note and "4 frames" in note


BOMB_PROBE = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import extract_latent_vectors as tool
report = {}
for path in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        tool.read_movie(path, 8, 16)
        outcome = "read"
    except tool.GifError as exc:
        outcome = str(exc)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    report[path] = [outcome, time.perf_counter() - start, grown / 1024]
print(json.dumps(report))
"""


def test_decompression_bomb_is_refused_before_allocating(tmp_path):
    # a real 5000x5000 GIF (25 Mpixels) compresses to a few KB; decoding it needs
    # at least 25 MB, refusing it needs next to nothing
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000), 128).save(buffer, "GIF")
    bomb = buffer.getvalue()
    claims = tmp_path / "claims 60000x60000.gif"
    claims.write_bytes(with_canvas(bomb, 60000, 60000))
    real = tmp_path / "real 5000x5000.gif"
    real.write_bytes(bomb)
    grows = tmp_path / "small canvas, huge frame.gif"  # the frame grows the canvas
    grows.write_bytes(with_canvas(bomb, 16, 16))
    paths = [claims, real, grows]

    probe = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(ROOT),
                            *map(str, paths)], capture_output=True, text=True,
                           timeout=120, check=False)
    assert probe.returncode == 0, probe.stderr
    import json

    report = json.loads(probe.stdout.splitlines()[-1])
    for path in paths:
        outcome, seconds, grown_mb = report[str(path)]
        assert "decompression bomb" in outcome and "refused" in outcome, outcome
        assert seconds < 0.5 and grown_mb < 10, (path.name, seconds, grown_mb)


def test_frames_of_different_sizes_become_movies_of_one_size(tmp_path):
    for size in [(16, 16), (24, 24), (40, 32), (13, 29), (128, 128)]:
        path = write_gif(tmp_path / f"{size}.gif", size=size)
        movie, note = tool.read_movie(path, 8, 16)
        assert movie.shape == (8, 16, 16) and movie.dtype == np.uint8
        assert note is None


def test_run_skips_every_bad_gif_with_one_warning_and_goes_on(tmp_path):
    folder = tmp_path / "gif"
    folder.mkdir()
    good = [write_gif(folder / f"GrayScott-f0.0{i + 2}00-k0.0600-00.gif", size=size,
                      seed=i) for i, size in enumerate([(16, 16), (24, 24), (40, 32)])]
    odd_name = write_gif(folder / "my run é ü, no parameters.gif", seed=7)
    cut_name = "GrayScott-f0.0500-k0.0650-00.gif"
    whole = write_gif(tmp_path / "whole.gif", n_frames=10, noise=True)
    cut_in_frame(whole, folder / cut_name, frame=6)
    for name, (data, _) in BAD_FILES.items():
        (folder / name).write_bytes(data)

    done = subprocess.run([sys.executable, str(SCRIPT), "--gif-dir", str(folder), *FAST],
                          capture_output=True, text=True, encoding="utf-8", timeout=300,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"}, check=False)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    for name, (_, reason) in BAD_FILES.items():
        said = [line for line in lines if name in line]
        assert len(said) == 1 and "warning" in said[0] and reason in said[0], said
    said = [line for line in lines if cut_name in line]
    assert len(said) == 1 and "damaged after frame 6; using frames 1-6" in said[0]
    _, rows = read_csv(folder / tool.LATENT_CSV)
    names = sorted(p.name for p in [*good, odd_name]) + [cut_name]
    assert [row[0] for row in rows] == sorted(names)
    odd_row = next(row for row in rows if row[0] == odd_name.name)
    assert odd_row[1:3] == ["", ""]
    assert len(read_csv(folder / tool.COMBINED_CSV)[1]) == len(names)


@pytest.mark.parametrize("with_model", [False, True], ids=["training", "encoding"])
def test_no_readable_gif_stops_with_one_clear_error(trained_copy, caplog, with_model):
    folder = trained_copy
    for gif in folder.glob("*.gif"):
        gif.unlink()
    if not with_model:
        (folder / tool.MODEL_FILE).unlink()
    for name, (data, _) in BAD_FILES.items():
        (folder / name).write_bytes(data)

    assert run_main(folder) == 2
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1, errors
    assert f"none of the {len(BAD_FILES)} GIFs in {folder} could be read" in errors[0]


# -----------------------------------------------------------------------------------
# the users' clustering file


NAMES = [f"GrayScott-f{0.01 + i * 1e-4:.4f}-k0.0600-00.gif" for i in range(375)]
F = np.array([0.01 + i * 1e-4 for i in range(375)])
K = np.full(375, 0.06)


def write_clusters(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    return sha256(path)


def test_clustering_file_with_188_rows_for_375_gifs_leaves_the_rest_empty(
        tmp_path, caplog):
    path = tmp_path / "clusters.csv"
    rows = [[NAMES[i], f"c{i}"] for i in range(0, 375, 2)]  # 188 rows
    random.Random(1).shuffle(rows)
    before = write_clusters(path, ["filename", "cluster"], rows)

    header, merged = tool.merge_clusters(NAMES, F, K, path)

    assert header == ["cluster"] and len(merged) == 375
    assert merged == [[f"c{i}"] if i % 2 == 0 else [""] for i in range(375)]
    warning = " ".join(messages(caplog))
    assert "187 GIFs have no clustering row" in warning and str(path) in warning
    assert sha256(path) == before


def test_clustering_file_with_full_paths_is_matched_by_file_name(tmp_path, caplog):
    path = tmp_path / "clusters.csv"
    rows = [[f"/data/runs/{NAMES[0]}", "a"], [f"C:\\runs\\{NAMES[1]}", "b"],
            [NAMES[2].removesuffix(".gif"), "c"]]
    before = write_clusters(path, ["path", "cluster"], rows)

    _, merged = tool.merge_clusters(NAMES[:3], F[:3], K[:3], path)

    assert merged == [["a"], ["b"], ["c"]]
    assert messages(caplog) == []
    assert sha256(path) == before


def test_clustering_file_with_duplicate_names_keeps_one_row_per_gif(tmp_path, caplog):
    path = tmp_path / "clusters.csv"
    rows = [[NAMES[0], "first"], [NAMES[1], "b"], [NAMES[0], "second"]]
    before = write_clusters(path, ["file", "cluster"], rows)

    _, merged = tool.merge_clusters(NAMES[:2], F[:2], K[:2], path)

    assert merged == [["first"], ["b"]]
    assert f"1 duplicate names kept once (e.g. {NAMES[0]})" in " ".join(messages(caplog))
    assert sha256(path) == before


@pytest.mark.parametrize("content, said", [
    (b"", "is empty"),
    (b"\n \n", "is empty"),
    (b"run,cluster\n1,a\n2,b\n", "has no file-name column"),
], ids=["empty", "blank lines", "no name column"])
def test_clustering_file_that_cannot_be_aligned_is_set_aside(tmp_path, caplog, content,
                                                             said):
    path = tmp_path / "clusters.csv"
    path.write_bytes(content)

    assert tool.merge_clusters(NAMES[:2], F[:2], K[:2], path) is None

    warning = " ".join(messages(caplog))
    assert said in warning and str(path) in warning and "k-means" in warning
    assert path.read_bytes() == content


def test_run_aligns_a_messy_clustering_file_by_name(trained_copy, caplog):
    folder = trained_copy
    gifs = sorted(p.name for p in folder.glob("*.gif"))
    path = folder / tool.CLUSTERS_CSV
    rows = [[f"/home/user/runs/{gifs[2]}", "0.0400", "c2"],
            ["not-one-of-ours.gif", "0.5", "x"],
            [gifs[0], "0.0200", "c0"],
            [gifs[0], "0.0200", "again"],
            [gifs[3], "0.0500", "c3"]]  # gifs[1] has no row
    before = write_clusters(path, ["gif", "f_value", "label"], rows)

    assert run_main(folder) == 0

    header, combined = read_csv(folder / tool.COMBINED_CSV)
    assert [row[0] for row in combined] == gifs
    label = header.index("label")
    assert [row[label] for row in combined] == ["c0", "", "c2", "c3"]
    assert "f_value" not in header and "latent_cluster" in header
    warning = " ".join(messages(caplog))
    assert "1 rows match no GIF" in warning and "1 GIFs have no clustering row" in warning
    assert "1 duplicate names" in warning
    assert sha256(path) == before


def test_run_without_a_name_column_falls_back_to_kmeans(trained_copy, caplog):
    folder = trained_copy
    path = folder / tool.CLUSTERS_CSV
    before = write_clusters(path, ["run", "label"], [["1", "a"], ["2", "b"]])

    assert run_main(folder) == 0

    header, combined = read_csv(folder / tool.COMBINED_CSV)
    assert len(combined) == 4 and "cluster" in header and "label" not in header
    assert all(row[header.index("cluster")] != "" for row in combined)
    assert "has no file-name column" in " ".join(messages(caplog))
    assert sha256(path) == before


# -----------------------------------------------------------------------------------
# model files


def test_model_from_other_settings_is_refused_naming_each_difference(trained_copy,
                                                                      caplog):
    folder = trained_copy
    model = folder / tool.MODEL_FILE
    before = {p.name: sha256(p) for p in folder.iterdir() if p.is_file()}

    assert run_main(folder, "--latent-dim", "6", "--frame-size", "32") == 2

    error = messages(caplog, logging.ERROR)[0]
    assert "latent_dim: model has 4, this run asks for 6" in error
    assert "frame_size: model has 16, this run asks for 32" in error
    assert "max_frames" not in error and "--retrain" in error
    assert {p.name: sha256(p) for p in folder.iterdir() if p.is_file()} == before

    assert run_main(folder, "--latent-dim", "6", "--frame-size", "32", "--retrain") == 0
    assert sha256(model) != before[model.name]
    settings = {**tool.model_settings(tool.parse_args([*FAST])), "latent_dim": 6,
                "frame_size": 32}
    tool.load_checkpoint(model, settings)  # the new model, with the new settings


def truncated(data):
    return data[: len(data) // 2]


@pytest.mark.parametrize("damage", [
    truncated, lambda data: b"", lambda data: random.Random(3).randbytes(len(data)),
    lambda data: data[:-200],
], ids=["cut in half", "zero bytes", "random bytes", "last bytes missing"])
def test_damaged_model_file_gives_a_clear_error(trained_copy, caplog, damage):
    folder = trained_copy
    model = folder / tool.MODEL_FILE
    model.write_bytes(damage(model.read_bytes()))
    before = sha256(model)

    assert run_main(folder) == 2

    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1
    assert f"{model} is not a model this tool can read" in errors[0]
    assert "--retrain" in errors[0]
    assert sha256(model) == before


class Payload:
    """Unpickling this creates the marker file: code from a shared model file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_model_file_with_a_code_payload_is_refused_without_running_it(trained_copy,
                                                                       caplog):
    folder = trained_copy
    model = folder / tool.MODEL_FILE
    marker = folder.parent / "payload-ran"
    checkpoint = torch.load(model, weights_only=True)
    checkpoint["note"] = Payload(marker)
    torch.save(checkpoint, model)
    # the payload is live: an unsafe load runs it
    torch.load(model, weights_only=False)
    assert marker.exists()
    marker.unlink()
    before = sha256(model)

    assert run_main(folder) == 2

    assert not marker.exists(), "the model file's payload was executed"
    error = messages(caplog, logging.ERROR)[0]
    assert str(model) in error and "pickled Python object" in error
    assert "could run code" in error and "was not loaded" in error
    assert sha256(model) == before


def test_cache_file_with_a_code_payload_is_ignored_without_running_it(trained_copy):
    folder = trained_copy
    marker = folder.parent / "payload-ran"
    payload = np.empty(1, dtype=object)
    payload[0] = Payload(marker)
    with open(folder / tool.CACHE_FILE, "wb") as fh:
        np.savez(fh, model_hash=payload, stamps=payload, latents=payload)

    assert run_main(folder) == 0

    assert not marker.exists(), "the cache file's payload was executed"
    _, rows = read_csv(folder / tool.LATENT_CSV)
    assert len(rows) == 4
