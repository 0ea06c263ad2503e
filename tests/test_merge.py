"""Merging the users' clustering file into ours, by GIF file name (issue 2)."""

import csv
import logging

import numpy as np
import pytest
from conftest import sha256

import extract_latent_vectors as tool

NAMES = [f"GrayScott-f0.0{i}00-k0.0600-00.gif" for i in range(10, 20)]  # sorted
F = np.array([i / 1000 for i in range(10, 20)])
K = np.full(10, 0.06)


def write_clusters(path, header, rows):
    """The users' clustering file."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def messy_clusters(path, name_column="filename", folder="/home/user/runs/"):
    """A clustering file in shuffled order that covers every other GIF, has rows for
    GIFs that do not exist, repeats f and k as f_value and k_value, and holds full
    paths. Returns (path, {GIF name: its row's cluster and label})."""
    covered = NAMES[::2]
    rows, expected = [], {}
    for i, name in enumerate(covered):
        cluster, label = str(100 + 7 * i), f"label-{i}"
        expected[name] = (cluster, label)
        rows.append([folder + name, cluster, tool.parse_f_k(name)[0],
                     tool.parse_f_k(name)[1], label])
    for f, label in ((0.099, "x"), (0.0991, "y")):  # GIFs that are not in the folder
        rows.append([f"{folder}GrayScott-f{f:.4f}-k0.0990-00.gif", "999", f, 0.099, label])
    rows = rows[::-1]  # the file is not in our order
    write_clusters(path, [name_column, "cluster", "f_value", "k_value", "label"], rows)
    return path, expected


@pytest.mark.parametrize("name_column, folder", [
    ("filename", "/home/user/runs/"),
    ("file", "C:\\Users\\user\\runs\\"),
    ("gif", ""),
    ("path", "gif/"),
])
def test_merge_aligns_each_gif_with_its_own_row_by_name(tmp_path, name_column, folder):
    path, expected = messy_clusters(tmp_path / "clusters.csv", name_column, folder)

    header, merged = tool.merge_clusters(NAMES, F, K, path)

    assert len(merged) == len(NAMES)  # one row per GIF, in our order
    assert header == ["cluster", "label"]  # users' columns, f/k only once (ours)
    for name, cells in zip(NAMES, merged):
        row = dict(zip(header, cells))
        if name in expected:
            assert (row["cluster"], row["label"]) == expected[name]
        else:  # no clustering row: empty, never a neighbour's value
            assert row["cluster"] == "" and row["label"] == ""


def test_merge_warns_once_counting_unmatched_rows_and_uncovered_gifs(tmp_path, caplog):
    path, _ = messy_clusters(tmp_path / "clusters.csv")

    with caplog.at_level(logging.WARNING, logger="extract_latent_vectors"):
        tool.merge_clusters(NAMES, F, K, path)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 rows match no GIF" in warnings[0]
    assert "5 GIFs have no clustering row" in warnings[0]
    assert "GrayScott-f0.0990-k0.0990-00.gif" in warnings[0]


def test_merge_leaves_the_clustering_file_byte_identical(tmp_path):
    path, _ = messy_clusters(tmp_path / "clusters.csv")
    before = sha256(path)

    tool.merge_clusters(NAMES, F, K, path)

    assert sha256(path) == before
