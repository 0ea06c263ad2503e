"""What a user sees when something is wrong: a clear message, no traceback (issue 2)."""

import csv

import numpy as np
import pytest
from conftest import run_script, write_grey_movie

import extract_latent_vectors as tool

FAST = ["--epochs", "1", "--max-frames", "8", "--frame-size", "16"]


def assert_refused(result, *words):
    """The run stopped with a non-zero status and a message holding every word."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, f"{word!r} missing from: {result.stderr}"


@pytest.mark.parametrize("flags", [[], ["--gif-dir", "runs/missing"]])
def test_missing_gif_folder_is_named_and_refused(tmp_path, flags):
    result = run_script(*flags, *FAST, cwd=tmp_path)

    folder = flags[1] if flags else tool.GIF_DIR
    assert_refused(result, folder, "--gif-dir")
    assert not list(tmp_path.rglob("*.csv"))


def test_empty_gif_folder_is_named_and_refused(tmp_path):
    (tmp_path / "gif").mkdir()
    (tmp_path / "gif" / "notes.txt").write_text("not a movie")

    result = run_script(*FAST, cwd=tmp_path)

    assert_refused(result, "gif", "--gif-dir")
    assert "no .gif" in result.stderr.lower() or "no gif" in result.stderr.lower()


def test_folder_whose_only_gif_is_unreadable_is_refused_naming_it(tmp_path):
    (tmp_path / "gif").mkdir()
    (tmp_path / "gif" / "broken.gif").write_bytes(b"GIF89a this is not a movie")

    result = run_script(*FAST, cwd=tmp_path)

    assert_refused(result, "broken.gif")
    assert not (tmp_path / "gif" / tool.MODEL_FILE).exists()
    assert not (tmp_path / "gif" / tool.LATENT_CSV).exists()


@pytest.mark.parametrize("flag, value", [("--frame-size", "50"), ("--max-frames", "12"),
                                         ("--latent-dim", "0")])
def test_bad_setting_is_refused_naming_the_flag(tmp_path, flag, value):
    (tmp_path / "gif").mkdir()
    write_grey_movie(tmp_path / "gif" / "GrayScott-f0.0300-k0.0600-00.gif",
                     np.zeros((4, 16, 16), np.uint8))

    result = run_script(flag, value, "--epochs", "1", cwd=tmp_path)

    assert_refused(result, flag)
    assert not (tmp_path / "gif" / tool.MODEL_FILE).exists()


def test_one_readable_gif_writes_the_csv_and_skips_the_maps(tmp_path):
    gif_dir = tmp_path / "gif"
    gif_dir.mkdir()
    rng = np.random.default_rng(0)
    write_grey_movie(gif_dir / "GrayScott-f0.0300-k0.0600-00.gif",
                     rng.integers(0, 256, (8, 16, 16)))
    (gif_dir / "GrayScott-f0.0400-k0.0600-00.gif").write_bytes(b"")  # empty file

    result = run_script(*FAST, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "GrayScott-f0.0400-k0.0600-00.gif" in result.stderr  # the skipped file
    assert "skip" in result.stderr.lower()
    with open(gif_dir / tool.LATENT_CSV, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    assert [row[0] for row in rows] == ["GrayScott-f0.0300-k0.0600-00.gif"]
    assert not (gif_dir / tool.TSNE_F_PNG).exists()
    assert not (gif_dir / tool.TSNE_K_PNG).exists()


def test_file_name_without_f_and_k_gets_a_vector_and_one_warning(tmp_path):
    gif_dir = tmp_path / "gif"
    gif_dir.mkdir()
    rng = np.random.default_rng(1)
    for name in ("GrayScott-f0.0300-k0.0600-00.gif", "movie-a.gif", "movie-b.gif"):
        write_grey_movie(gif_dir / name, rng.integers(0, 256, (8, 16, 16)))

    result = run_script(*FAST, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "movie-a.gif" in line]
    assert len(warnings) == 1
    with open(gif_dir / tool.LATENT_CSV, newline="") as fh:
        rows = {row[0]: row for row in list(csv.reader(fh))[1:]}
    assert rows["movie-a.gif"][1:3] == ["", ""]
    assert all(cell != "" for cell in rows["movie-a.gif"][3:])


def test_help_shows_every_flag_with_its_default(tmp_path):
    result = run_script("--help", cwd=tmp_path)

    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps long lines
    defaults = [("--gif-dir", tool.GIF_DIR), ("--latent-dim", tool.LATENT_DIM),
                ("--batch-size", tool.BATCH_SIZE), ("--epochs", tool.EPOCHS),
                ("--max-frames", tool.MAX_FRAMES), ("--frame-size", tool.FRAME_SIZE),
                ("--seed", tool.SEED), ("--n-clusters", tool.N_CLUSTERS)]
    for flag, default in defaults:
        assert flag in text
        assert f"default: {default}" in text
    for flag in ("--clusters-csv", "--retrain", "--device"):
        assert flag in text
