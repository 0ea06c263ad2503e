"""The script run as a user runs it, on a dozen tiny simulated GIFs (issue 2).

Four runs share one folder, in order: the first trains (one epoch, the default
frames and frame size) from the default `gif` folder; the second finds the model,
loads it instead of training, and merges a clustering file; the third meets a GIF
added since training; the fourth is told to --retrain. Each test checks one thing
about one run.
"""

import csv
import hashlib
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import make_tiny_runs, run_script, sha256
from PIL import Image

import extract_latent_vectors as tool

OUTPUTS = [tool.LATENT_CSV, tool.COMBINED_CSV, tool.TSNE_F_PNG, tool.TSNE_K_PNG,
           tool.MODEL_FILE]
ADDED = "GrayScott-f0.0990-k0.0990-07.gif"  # a copy of the first GIF, added later


def read_table(path):
    """A CSV file as (header, rows of cells)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def closing_line(stderr):
    """The last line the script logged."""
    return stderr.strip().splitlines()[-1]


def training_lines(stderr):
    """The per-epoch lines of a log."""
    return [line for line in stderr.splitlines() if re.match(r"\s*epoch\s+\d+", line)]


def snapshot(folder):
    """Bytes of every file in folder, by name."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A first run from the folder above gif/, with the default gif folder."""
    home = tmp_path_factory.mktemp("project")
    gif_dir = home / "gif"
    simulated = make_tiny_runs(gif_dir)
    before = set(os.listdir(gif_dir))
    result = run_script("--epochs", "1", cwd=home)
    return {"home": home, "gif_dir": gif_dir, "simulated": simulated, "before": before,
            "result": result, "files": snapshot(gif_dir)}


@pytest.fixture(scope="module")
def second(first, tmp_path_factory):
    """A second run on unchanged GIFs (newer file times), with a clustering file."""
    gif_dir = first["gif_dir"]
    for path in gif_dir.glob("*.gif"):  # same pixels; no cache may stand in for them
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    names = sorted(first["simulated"])
    covered = names[1::3]
    rows = [["/data/runs/" + n, f"cl{i}", *first["simulated"][n], f"note {i}"]
            for i, n in enumerate(covered)]
    rows.append(["/data/runs/GrayScott-f0.0010-k0.0010-00.gif", "cl-x", 0.001, 0.001,
                 "no such GIF"])
    clusters = gif_dir / tool.CLUSTERS_CSV
    with open(clusters, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "cluster", "f_value", "k_value", "note"],
                                  *rows[::-1]])
    clusters_hash = sha256(clusters)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = run_script("--epochs", "1", "--gif-dir", gif_dir, cwd=elsewhere)
    files = snapshot(gif_dir)
    clusters.unlink()  # the third run uses k-means again
    return {"result": result, "files": files, "clusters_hash": clusters_hash,
            "clusters_path": clusters,
            "expected": {n: (f"cl{i}", f"note {i}") for i, n in enumerate(covered)}}


@pytest.fixture(scope="module")
def third(first, second):
    """A run with the trained model after a GIF was added (a copy of the first)."""
    gif_dir = first["gif_dir"]
    source = min(first["simulated"])
    shutil.copyfile(gif_dir / source, gif_dir / ADDED)
    result = run_script("--epochs", "1", cwd=first["home"])
    return {"result": result, "files": snapshot(gif_dir), "source": source}


@pytest.fixture(scope="module")
def fourth(first, third):
    """A run told to --retrain, with smaller settings than the saved model's."""
    result = run_script("--epochs", "1", "--retrain", "--max-frames", "8",
                        "--frame-size", "16", cwd=first["home"])
    return {"result": result, "files": snapshot(first["gif_dir"])}


# -----------------------------------------------------------------------------------
# the first run: trains, writes every output


def test_first_run_succeeds_and_trains_one_epoch(first):
    result = first["result"]

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(training_lines(result.stderr)) == 1


def test_latent_csv_has_one_sorted_row_per_gif_with_f_k_and_finite_z(first):
    header, rows = read_table(first["gif_dir"] / tool.LATENT_CSV)
    simulated = first["simulated"]

    assert header == ["filename", "f", "k"] + [f"z{i}" for i in range(32)]
    assert [row[0] for row in rows] == sorted(simulated)
    for row in rows:
        f, k = simulated[row[0]]
        assert float(row[1]) == pytest.approx(f, abs=1e-9)
        assert float(row[2]) == pytest.approx(k, abs=1e-9)
        assert all(math.isfinite(float(z)) for z in row[3:])
    vectors = np.array([[float(z) for z in row[3:]] for row in rows])
    assert len(np.unique(vectors, axis=0)) == len(rows)  # each GIF its own vector


def test_combined_csv_adds_tsne_and_clusters_to_the_latent_rows(first):
    latent_header, latent_rows = read_table(first["gif_dir"] / tool.LATENT_CSV)
    header, rows = read_table(first["gif_dir"] / tool.COMBINED_CSV)

    assert header == latent_header + ["tsne_x", "tsne_y", "cluster"]
    assert len(rows) == len(latent_rows) == 12
    assert [row[:len(latent_header)] for row in rows] == latent_rows
    coords = np.array([[float(row[-3]), float(row[-2])] for row in rows])
    assert np.isfinite(coords).all()
    assert len(np.unique(coords, axis=0)) > 1
    clusters = [int(row[-1]) for row in rows]
    assert min(clusters) >= 0 and len(set(clusters)) >= 2


def test_every_png_written_is_a_valid_image_of_sensible_size(first):
    pngs = [name for name in first["files"] if name.endswith(".png")]

    assert {tool.TSNE_F_PNG, tool.TSNE_K_PNG} <= set(pngs)
    for name in pngs:
        with Image.open(first["gif_dir"] / name) as image:
            image.verify()
        with Image.open(first["gif_dir"] / name) as image:
            assert image.format == "PNG"
            assert 300 <= image.width <= 5000 and 300 <= image.height <= 5000
            grey = np.asarray(image.convert("L"))
            assert grey.std() > 5  # something is drawn on it


def test_model_file_loads_with_weights_only_and_holds_its_settings(first):
    checkpoint = torch.load(first["gif_dir"] / tool.MODEL_FILE, map_location="cpu",
                            weights_only=True)

    settings = checkpoint["settings"]
    assert (settings["latent_dim"], settings["max_frames"], settings["frame_size"]) == (
        tool.LATENT_DIM, tool.MAX_FRAMES, tool.FRAME_SIZE)
    assert "architecture" in settings
    assert len(checkpoint["loss_history"]) == 1
    assert math.isfinite(checkpoint["loss_history"][0])
    model = tool.build_model(settings)
    model.load_state_dict(checkpoint["model"])


def test_closing_line_names_every_file_written(first):
    line = closing_line(first["result"].stderr)
    new = {name for name in first["files"]
           if name not in first["before"] and not name.startswith(".")}

    assert set(OUTPUTS) <= new
    for name in new:
        assert name in line, f"{name} was written but the closing line omits it"


# -----------------------------------------------------------------------------------
# the second run: loads the model, same vectors, merges the users' clustering


def test_second_run_loads_the_model_instead_of_training(first, second):
    result = second["result"]

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert training_lines(result.stderr) == []
    assert re.search(r"(using|load).*model", result.stderr, re.IGNORECASE)
    assert second["files"][tool.MODEL_FILE] == first["files"][tool.MODEL_FILE]


def test_second_run_writes_the_same_latent_vectors_byte_for_byte(first, second):
    assert second["files"][tool.LATENT_CSV] == first["files"][tool.LATENT_CSV]


def test_second_run_merges_the_clustering_file_by_name(first, second):
    text = second["files"][tool.COMBINED_CSV].decode().splitlines()
    header, rows = next(csv.reader(text[:1])), list(csv.reader(text[1:]))
    table = [dict(zip(header, row)) for row in rows]

    assert [row["filename"] for row in table] == sorted(first["simulated"])
    assert header.count("f") == 1 and header.count("k") == 1
    assert not {"f_value", "k_value", "path"} & set(header)
    assert not [h for h in header if h.endswith(("_x", "_y")) and h[:4] != "tsne"]
    assert {"tsne_x", "tsne_y", "cluster", "note"} <= set(header)
    for row in table:
        assert (row["cluster"], row["note"]) == second["expected"].get(
            row["filename"], ("", ""))
    # the row that matches no GIF is reported, not merged
    assert "GrayScott-f0.0010-k0.0010-00.gif" in second["result"].stderr


def test_second_run_leaves_the_clustering_file_byte_identical(second):
    after = hashlib.sha256(second["files"][tool.CLUSTERS_CSV]).hexdigest()

    assert after == second["clusters_hash"]


# -----------------------------------------------------------------------------------
# the third run: a GIF added since training; the fourth: --retrain


def test_gif_added_since_training_gets_the_vector_of_its_twin(first, third):
    result = third["result"]
    text = third["files"][tool.LATENT_CSV].decode().splitlines()
    rows = {row[0]: row for row in csv.reader(text[1:])}

    assert result.returncode == 0, result.stderr
    assert training_lines(result.stderr) == []
    assert len(rows) == 13
    assert [float(v) for v in rows[ADDED][1:3]] == [0.099, 0.099]
    # same pixels, same vector, though the twin was encoded long before
    assert rows[ADDED][3:] == rows[third["source"]][3:]
    first_lines = set(first["files"][tool.LATENT_CSV].decode().splitlines())
    assert set(text) - first_lines == {line for line in text if line.startswith(ADDED)}


def test_retrain_trains_again_and_replaces_the_model(first, fourth):
    result = fourth["result"]

    assert result.returncode == 0, result.stderr
    assert len(training_lines(result.stderr)) == 1
    checkpoint = torch.load(first["gif_dir"] / tool.MODEL_FILE, map_location="cpu",
                            weights_only=True)
    assert checkpoint["settings"]["frame_size"] == 16
    assert checkpoint["training"]["gifs"] == 13
    assert tool.MODEL_FILE in closing_line(result.stderr)
