"""The saved model: a round trip that changes nothing; a mismatch refused (issue 2)."""

import numpy as np
import pytest
import torch
from conftest import run_script, sha256, write_grey_movie

import extract_latent_vectors as tool

SMALL = ["--latent-dim", "8", "--max-frames", "8", "--frame-size", "16"]


def small_model(args, seed=0):
    """A freshly initialised model for the settings in args."""
    torch.manual_seed(seed)
    return tool.build_model(tool.model_settings(args))


def random_movies(n, args, seed=0):
    """n uint8 movies (n, frames, size, size) of noise."""
    rng = np.random.default_rng(seed)
    shape = (n, args.max_frames, args.frame_size, args.frame_size)
    return rng.integers(0, 256, shape).astype(np.uint8)


def test_checkpoint_round_trip_gives_identical_encodings(tmp_path):
    args = tool.parse_args(SMALL)
    model, settings = small_model(args), tool.model_settings(args)
    movies = random_movies(5, args)
    path = tmp_path / tool.MODEL_FILE
    cpu = torch.device("cpu")
    before = tool.encode_movies(model, movies, cpu)

    history = {"loss": [0.5, 0.25], "reconstruction": [0.05, 0.025]}
    tool.save_checkpoint(path, model, settings, history, args, n_gifs=5)
    loaded, checkpoint = tool.load_checkpoint(path, settings)
    after = tool.encode_movies(loaded, movies, cpu)

    assert before.shape == (5, 8)
    assert np.array_equal(before, after)  # to the last digit
    assert checkpoint["loss_history"] == [0.5, 0.25]
    assert checkpoint["reconstruction_history"] == [0.05, 0.025]


def test_checkpoint_holds_settings_and_loads_with_weights_only(tmp_path):
    args = tool.parse_args(SMALL)
    path = tmp_path / tool.MODEL_FILE
    tool.save_checkpoint(path, small_model(args), tool.model_settings(args),
                         {"loss": [0.1], "reconstruction": [0.01]}, args, n_gifs=3)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)

    assert checkpoint["settings"]["latent_dim"] == 8
    assert checkpoint["settings"]["max_frames"] == 8
    assert checkpoint["settings"]["frame_size"] == 16
    assert "architecture" in checkpoint["settings"]
    assert checkpoint["loss_history"] == [0.1]


def test_encoding_twice_gives_the_same_vectors_to_the_last_digit():
    args = tool.parse_args(SMALL)
    model, movies = small_model(args), random_movies(7, args)
    cpu = torch.device("cpu")

    first = tool.encode_movies(model, movies, cpu)
    second = tool.encode_movies(model, movies, cpu)

    assert np.array_equal(first, second)
    assert len(np.unique(first, axis=0)) == 7  # different movies, different vectors


def test_a_movie_gets_the_same_vector_whatever_else_is_encoded_with_it():
    # a GIF added later is encoded alone; it must match a run that encodes it
    # together with all the others, to the last digit
    args = tool.parse_args([])  # the default frames and frame size
    model, movies = small_model(args), random_movies(7, args)
    cpu = torch.device("cpu")

    together = tool.encode_movies(model, movies, cpu)
    alone = [tool.encode_movies(model, movies[i:i + 1], cpu)[0] for i in (0, 6)]
    pair = tool.encode_movies(model, movies[5:7], cpu)

    assert np.array_equal(alone[0], together[0])
    assert np.array_equal(alone[1], together[6])
    assert np.array_equal(pair, together[5:7])


@pytest.mark.parametrize("changed", [
    {"latent_dim": 4},
    {"frame_size": 32},
    {"max_frames": 16},
    {"latent_dim": 4, "frame_size": 32, "max_frames": 16},
    {"architecture": -1},
])
def test_checkpoint_with_other_settings_is_refused_naming_each_difference(tmp_path,
                                                                          changed):
    args = tool.parse_args(SMALL)
    settings = tool.model_settings(args)
    path = tmp_path / tool.MODEL_FILE
    tool.save_checkpoint(path, small_model(args), settings, {"loss": [0.1]}, args,
                         n_gifs=1)
    wanted = {**settings, **changed}

    with pytest.raises(tool.UserError) as refused:
        tool.load_checkpoint(path, wanted)
    message = str(refused.value)

    for name in changed:
        assert name in message
    for name in set(settings) - set(changed):
        assert f"{name}:" not in message  # only the differences are listed
    assert "--retrain" in message


def test_run_refuses_a_model_with_other_settings_and_leaves_it_untouched(tmp_path):
    gif_dir = tmp_path / "gif"
    gif_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_grey_movie(gif_dir / f"GrayScott-f0.0{i + 2}00-k0.0600-00.gif",
                         rng.integers(0, 256, (8, 16, 16)))
    args = tool.parse_args(SMALL)
    model_path = gif_dir / tool.MODEL_FILE
    tool.save_checkpoint(model_path, small_model(args), tool.model_settings(args),
                         {"loss": [0.1]}, args, n_gifs=3)
    before = sha256(model_path)

    refused = run_script("--gif-dir", gif_dir, "--latent-dim", "4", "--max-frames",
                         "8", "--frame-size", "16", "--epochs", "1", cwd=tmp_path)

    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    assert "latent_dim" in refused.stderr or "latent-dim" in refused.stderr
    assert "--retrain" in refused.stderr
    assert sha256(model_path) == before
    assert not (gif_dir / tool.LATENT_CSV).exists()

    retrained = run_script("--gif-dir", gif_dir, "--latent-dim", "4", "--max-frames",
                           "8", "--frame-size", "16", "--epochs", "1", "--retrain",
                           cwd=tmp_path)

    assert retrained.returncode == 0, retrained.stderr
    assert "epoch" in retrained.stderr
    saved = torch.load(model_path, map_location="cpu", weights_only=True)
    assert saved["settings"]["latent_dim"] == 4
    header = (gif_dir / tool.LATENT_CSV).read_text().splitlines()[0].split(",")
    assert header == ["filename", "f", "k", "z0", "z1", "z2", "z3"]
