"""The pictures a user looks at, and the physics the model is built to respect (issue 3).

Also the GPU path (issue 4), run only where PyTorch finds CUDA.
"""

import numpy as np
import pytest
import torch
from conftest import FAST, make_tiny_runs, run_script
from PIL import Image

import extract_latent_vectors as tool

DPI = 120  # what save_figure writes at


def pixels(path):
    """A PNG as an (height, width, 3) uint8 array."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def count_colour(image, rgb):
    """How many pixels have exactly this colour."""
    return int((image == np.array(rgb, np.uint8)).all(-1).sum())


def tab20(i, n):
    """The colour plot_clusters_fk gives cluster i of n, as 0-255 RGB."""
    import matplotlib

    colour = matplotlib.colormaps["tab20"].resampled(n)(i)
    return tuple(round(255 * c) for c in colour[:3])


def test_cluster_map_draws_each_cluster_in_its_own_colour(tmp_path):
    f = np.array([0.02, 0.03, 0.04, 0.05, 0.06, 0.02])
    k = np.array([0.05, 0.055, 0.06, 0.062, 0.065, 0.06])
    clusters = np.array([0, 0, 1, 1, 2, 2])
    path = tmp_path / tool.CLUSTERS_FK_PNG

    tool.plot_clusters_fk(f, k, clusters, path)

    image = pixels(path)
    assert image.shape == (6 * DPI, 7 * DPI, 3)
    drawn = [count_colour(image, tab20(i, 3)) for i in range(3)]
    assert all(n > 50 for n in drawn), drawn  # two markers and a legend entry each


def test_reconstructions_show_each_gif_over_what_the_model_rebuilds(tmp_path):
    model = tool.MovieAutoencoder(4, 8, 16, width=4).eval()
    movies = np.zeros((3, 8, 16, 16), np.uint8)  # (gifs, frames, h, w): black movies
    names = ["a.gif", "b.gif", "c.gif"]
    two, three = tmp_path / "two.png", tmp_path / "three.png"

    tool.plot_reconstructions(model, movies[:2], names[:2], torch.device("cpu"), two)
    tool.plot_reconstructions(model, movies, names, torch.device("cpu"), three)

    small, large = pixels(two), pixels(three)
    assert small.shape[1] == large.shape[1] == round(1.6 * 6 * DPI)  # six frames
    assert (small.shape[0], large.shape[0]) == (round(3.4 * 2 * DPI),
                                                round(3.4 * 3 * DPI))
    # the GIF rows show the black frames; an untrained model rebuilds mid-grey
    assert count_colour(large, (0, 0, 0)) > 3 * 6 * 40 * 40
    assert (np.abs(large.astype(int) - 128) < 40).all(-1).sum() > 3 * 6 * 40 * 40


def test_loss_plot_draws_the_loss_and_the_reconstruction_error(tmp_path):
    path = tmp_path / tool.LOSS_PNG

    tool.plot_loss({"loss": [1.0, 0.5, 0.3, 0.25],
                    "reconstruction": [0.1, 0.05, 0.03, 0.02]}, path)

    image = pixels(path)
    assert image.shape == (4 * DPI, 6 * DPI, 3)
    assert count_colour(image, (0x1F, 0x77, 0xB4)) > 100  # the loss, in C0 blue
    assert count_colour(image, (0xFF, 0x7F, 0x0E)) > 100  # reconstruction, C1


def test_latent_is_the_same_when_the_movie_is_moved_round_the_periodic_grid():
    torch.manual_seed(0)
    model = tool.MovieAutoencoder(8, 16, 32, width=4).eval()
    movie = torch.rand(1, 1, 16, 32, 32)  # (batch, 1, frames, height, width)
    # the encoder's strides multiply to 16 pixels: a shift by 16 is exact
    moved = torch.roll(movie, (16, -16), dims=(3, 4))
    other = torch.rand(1, 1, 16, 32, 32)

    with torch.no_grad():
        z, z_moved, z_other = (model.encode(m) for m in (movie, moved, other))

    assert torch.allclose(z, z_moved, atol=1e-5)
    assert not torch.allclose(z, z_other, atol=1e-3)


def test_augment_moves_turns_or_flips_without_changing_any_pixel_value():
    batch = torch.rand(2, 1, 4, 16, 16)
    generator = torch.Generator().manual_seed(3)

    views = [tool.augment(batch, generator) for _ in range(8)]

    for view in views:
        assert view.shape == batch.shape
        assert torch.equal(view.flatten(2).sort(-1).values,
                           batch.flatten(2).sort(-1).values)
    assert sum(not torch.equal(view, batch) for view in views) >= 6


def test_invariance_term_is_small_for_equal_views_and_large_for_collapsed_ones():
    torch.manual_seed(0)
    spread = torch.randn(64, 8) * 2  # (batch, latent_dim), well spread, independent
    collapsed = torch.zeros(64, 8)

    assert tool.invariance_loss(spread, spread) < 0.2
    assert tool.invariance_loss(collapsed, collapsed) > 1.5  # one per view
    assert tool.invariance_loss(spread, spread + 1) > tool.invariance_loss(spread,
                                                                           spread)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_trains_and_encodes_on_the_gpu_like_the_cpu(tmp_path):
    gif_dir = tmp_path / "gif"
    make_tiny_runs(gif_dir, runs=1)
    cpu_dir = tmp_path / "cpu"
    make_tiny_runs(cpu_dir, runs=1)

    gpu = run_script("--gif-dir", gif_dir, "--device", "cuda", *FAST, cwd=tmp_path)
    cpu = run_script("--gif-dir", cpu_dir, "--device", "cpu", *FAST, cwd=tmp_path)

    assert gpu.returncode == 0, gpu.stderr
    assert cpu.returncode == 0, cpu.stderr
    assert "on cuda" in gpu.stderr
    checkpoint = torch.load(gif_dir / tool.MODEL_FILE, weights_only=True)
    assert all(v.device.type == "cpu" for v in checkpoint["model"].values())
    gpu_rows = (gif_dir / tool.LATENT_CSV).read_text().splitlines()
    cpu_rows = (cpu_dir / tool.LATENT_CSV).read_text().splitlines()
    assert len(gpu_rows) == len(cpu_rows) == 7
