"""The GIF loader on crafted files, and reading f and k from file names (issue 2).

Most GIFs here are written byte by byte by conftest.gif_bytes, so each test knows the
exact grey level of every pixel of every frame and can check what the loader makes
of it: compositing, palettes, transparency, frame choice and resizing.
"""

import numpy as np
import pytest
from conftest import Frame, flat, gif_bytes, write_gif, write_grey_movie
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import extract_latent_vectors as tool


def levels(movie):
    """The grey level of each frame of a movie whose frames are flat."""
    assert (movie == movie[:, :1, :1]).all(), "frames are not flat"
    return movie[:, 0, 0].tolist()


# -----------------------------------------------------------------------------------
# palettes, compositing, transparency, colour


def test_loader_reads_grey_levels_through_the_global_palette(tmp_path):
    # a global palette that is not the identity: index i shows grey 255 - i
    inverted = [(255 - i,) * 3 for i in range(256)]
    frames = [Frame(flat(index, 8)) for index in (0, 40, 200)]
    path = write_gif(tmp_path / "global.gif", 8, 8, frames, global_palette=inverted)

    movie, _ = tool.read_movie(path, max_frames=3, frame_size=8)

    assert levels(movie) == [255, 215, 55]


def test_loader_uses_each_frames_local_palette(tmp_path):
    # the same index 10 in every frame, shown through three different local palettes
    palettes = [[(255 - i,) * 3 for i in range(256)],
                [((7 * i) % 256,) * 3 for i in range(256)],
                [(min(255, 3 * i),) * 3 for i in range(256)]]
    frames = [Frame(flat(10, 8), palette=p) for p in palettes]
    path = write_gif(tmp_path / "local.gif", 8, 8, frames, global_palette=None)

    movie, _ = tool.read_movie(path, max_frames=3, frame_size=8)

    assert levels(movie) == [245, 70, 30]


def test_loader_uses_a_local_palette_after_a_grey_global_palette(tmp_path):
    # frame 0 uses the global grey ramp, frame 1 brings its own palette
    # (what Pillow writes when a grey first frame is followed by a coloured one)
    scrambled = [((7 * i) % 256,) * 3 for i in range(256)]
    frames = [Frame(flat(10, 8)), Frame(flat(10, 8), palette=scrambled)]
    path = write_gif(tmp_path / "mixed.gif", 8, 8, frames)

    movie, _ = tool.read_movie(path, max_frames=2, frame_size=8)

    assert levels(movie) == [10, 70]


@pytest.mark.parametrize("version, disposal", [(b"GIF89a", 1), (b"GIF87a", 0)])
def test_loader_composites_partial_frame_onto_previous_canvas(tmp_path, version,
                                                              disposal):
    first = (np.arange(12 * 12).reshape(12, 12) % 250).astype(np.uint8)  # (h, w)
    patch = np.full((3, 4), 250, np.uint8)  # drawn at rows 4-6, columns 5-8
    frames = [Frame(first, disposal=disposal),
              Frame(patch, left=5, top=4, disposal=disposal)]
    path = write_gif(tmp_path / "partial.gif", 12, 12, frames, version=version)

    movie, _ = tool.read_movie(path, max_frames=2, frame_size=12)

    inside = np.zeros((12, 12), bool)
    inside[4:7, 5:9] = True
    assert (movie[0] == first).all()
    assert (movie[1][inside] == 250).all()
    assert (movie[1][~inside] == first[~inside]).all()


def test_loader_shows_previous_frame_through_transparent_pixels(tmp_path):
    second = flat(100, 8)
    second[:, :3] = 7  # index 7 is transparent in frame 1
    frames = [Frame(flat(40, 8)), Frame(second, transparency=7, disposal=1)]
    path = write_gif(tmp_path / "transparent.gif", 8, 8, frames)

    movie, _ = tool.read_movie(path, max_frames=2, frame_size=8)

    assert (movie[1][:, :3] == 40).all()
    assert (movie[1][:, 3:] == 100).all()


def test_loader_shows_white_background_through_transparent_first_frame(tmp_path):
    # u = 1 is white: a transparent pixel in the first frame has nothing under it
    # but the empty background, which must not read as black (index 0)
    first = flat(100, 8)
    first[:2] = 0
    path = write_gif(tmp_path / "hole.gif", 8, 8, [Frame(first, transparency=0)])

    movie, _ = tool.read_movie(path, max_frames=1, frame_size=8)

    assert (movie[0][:2] == 255).all()
    assert (movie[0][2:] == 100).all()


def test_loader_turns_colour_palette_into_luma_grey(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (128, 64, 32)]
    stripes = np.arange(5, dtype=np.uint8).repeat(4)[None].repeat(20, 0)  # (20, 20)
    path = write_gif(tmp_path / "colour.gif", 20, 20, [Frame(stripes, palette=colours)])

    movie, _ = tool.read_movie(path, max_frames=1, frame_size=20)

    # ITU-R 601 luma, L = 0.299 R + 0.587 G + 0.114 B
    expected = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in colours]
    assert np.abs(movie[0, 0, ::4] - np.array(expected)).max() <= 1


def test_loader_reads_rgb_gif_saved_by_pillow(tmp_path):
    # Pillow quantises RGB images to a palette when it writes them
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, 8:] = (0, 200, 0)
    path = tmp_path / "rgb.gif"
    Image.fromarray(rgb, "RGB").save(path)

    movie, _ = tool.read_movie(path, max_frames=2, frame_size=16)

    assert (movie[:, :, :8] == 0).all()
    assert np.abs(movie[:, :, 8:].astype(int) - round(0.587 * 200)).max() <= 2


def test_loader_reads_grey_then_colour_frames_saved_by_pillow(tmp_path):
    # Pillow writes the grey frame with the grey-ramp palette and the red frame
    # with a local palette of its own
    grey = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (16, 1)), "L")
    red = np.zeros((16, 256, 3), np.uint8)
    red[..., 0] = 200
    path = tmp_path / "grey_then_red.gif"
    grey.save(path, save_all=True, append_images=[Image.fromarray(red, "RGB")])

    movie, _ = tool.read_movie(path, max_frames=2, frame_size=16)

    assert np.abs(movie[1].astype(int) - round(0.299 * 200)).max() <= 2


# -----------------------------------------------------------------------------------
# which frames, how many, what size


def test_loader_repeats_a_one_frame_gif_to_max_frames(tmp_path):
    path = write_grey_movie(tmp_path / "one.gif", flat(77, 16)[None])

    movie, _ = tool.read_movie(path, max_frames=8, frame_size=16)

    assert movie.shape == (8, 16, 16)
    assert levels(movie) == [77] * 8


def test_loader_repeats_short_movie_in_time_order(tmp_path):
    path = write_grey_movie(tmp_path / "short.gif",
                            np.stack([flat(v, 16) for v in (10, 60, 110, 160, 210)]))

    movie, _ = tool.read_movie(path, max_frames=8, frame_size=16)
    got = levels(movie)

    assert len(got) == 8
    assert got == sorted(got)  # time order: never a later frame before an earlier one
    assert set(got) == {10, 60, 110, 160, 210}  # every frame is used
    assert got[0] == 10 and got[-1] == 210


def test_loader_reads_gif87a_without_frame_delays(tmp_path):
    movie_in = np.stack([flat(v, 16) for v in (200, 150, 100, 50)])
    path = write_grey_movie(tmp_path / "users.gif", movie_in, version=b"GIF87a")
    assert path.read_bytes()[:6] == b"GIF87a"
    assert b"\x21\xf9" not in path.read_bytes()[:13 + 768 + 2]  # no frame delays

    movie, note = tool.read_movie(path, max_frames=4, frame_size=16)

    assert levels(movie) == [200, 150, 100, 50]
    assert note is None


def test_loader_reads_the_users_simulator_files(tmp_path):
    import grayscott_sim

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 32, 32)).astype(np.uint8)
    path = tmp_path / grayscott_sim.gif_name(0.03, 0.06, 0)
    grayscott_sim.write_gif(path, frames)

    movie, _ = tool.read_movie(path, max_frames=5, frame_size=32)

    assert (movie == frames).all()


def test_loader_spreads_frames_evenly_from_first_to_last(tmp_path):
    # frame i has grey level 2 i, so each chosen frame tells its own index
    n = 100
    path = write_grey_movie(tmp_path / "long.gif",
                            np.stack([flat(2 * i, 8) for i in range(n)]))

    movie, _ = tool.read_movie(path, max_frames=8, frame_size=8)
    chosen = [level // 2 for level in levels(movie)]

    assert chosen[0] == 0 and chosen[-1] == n - 1
    gaps = np.diff(chosen)
    assert gaps.min() >= (n - 1) // 7 and gaps.max() <= -(-(n - 1) // 7)


def test_loader_output_is_max_frames_by_frame_size_uint8_by_default(tmp_path):
    rng = np.random.default_rng(1)
    path = write_grey_movie(tmp_path / "users.gif",
                            rng.integers(0, 256, (40, 128, 128)).astype(np.uint8))

    movie, _ = tool.read_movie(path)

    assert movie.shape == (tool.MAX_FRAMES, tool.FRAME_SIZE, tool.FRAME_SIZE)
    assert movie.dtype == np.uint8


@pytest.mark.parametrize("canvas, size", [(128, 64), (64, 48), (100, 64), (128, 80)])
def test_loader_resizes_with_antialiasing(tmp_path, canvas, size):
    # a one-pixel checkerboard is mid-grey once shrunk; aliasing would leave
    # black and white pixels (or a flat black or white frame)
    board = (np.indices((canvas, canvas)).sum(0) % 2).astype(np.uint8) * 255
    path = write_grey_movie(tmp_path / "board.gif", board[None])

    movie, _ = tool.read_movie(path, max_frames=8, frame_size=size)

    assert movie.shape == (8, size, size)
    assert abs(movie.mean() - 127.5) < 3
    assert 90 <= movie.min() and movie.max() <= 165


def test_loader_keeps_block_means_when_shrinking_128_to_64(tmp_path):
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (128, 128)).astype(np.uint8)
    path = write_grey_movie(tmp_path / "users.gif", frame[None])

    movie, _ = tool.read_movie(path, max_frames=8, frame_size=64)

    means = frame.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.abs(movie[0] - means).max() <= 1


def test_loader_enlarges_a_small_canvas(tmp_path):
    left_dark = np.full((16, 16), 220, np.uint8)
    left_dark[:, :8] = 20
    path = write_grey_movie(tmp_path / "small.gif", left_dark[None])

    movie, _ = tool.read_movie(path, max_frames=8, frame_size=32)

    assert movie.shape == (8, 32, 32)
    assert (movie[:, :, :14] == 20).all() and (movie[:, :, 18:] == 220).all()


# -----------------------------------------------------------------------------------
# frame choice and broken files, over many cases


@given(n_frames=st.integers(1, 400), max_frames=st.sampled_from([8, 16, 32, 64]))
def test_frame_indices_are_evenly_spread_and_include_first_and_last(n_frames,
                                                                    max_frames):
    picked = np.asarray(tool.frame_indices(n_frames, max_frames))

    assert len(picked) == max_frames
    assert picked[0] == 0 and picked[-1] == n_frames - 1
    gaps = np.diff(picked)
    assert (gaps >= 0).all()
    assert gaps.max() - gaps.min() <= 1
    if n_frames >= max_frames:
        assert len(set(picked.tolist())) == max_frames
    else:
        assert set(picked.tolist()) == set(range(n_frames))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_loader_raises_only_gif_error_on_damaged_bytes(tmp_path_factory, data):
    frames = [Frame(flat(v, 8)) for v in (0, 100, 200)]
    good = bytearray(gif_bytes(8, 8, frames))
    cut = data.draw(st.integers(0, len(good)), label="cut")
    damaged = good[:cut]
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        if damaged:
            where = data.draw(st.integers(0, len(damaged) - 1))
            damaged[where] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("damaged") / "damaged.gif"
    path.write_bytes(bytes(damaged))

    try:
        movie, _ = tool.read_movie(path, max_frames=8, frame_size=16)
    except tool.GifError as exc:
        assert str(exc)  # the reason is shown to the user
    else:
        assert movie.shape == (8, 16, 16) and movie.dtype == np.uint8


# -----------------------------------------------------------------------------------
# f and k from the file name


@pytest.mark.parametrize("name, f, k", [
    ("GrayScott-f0.0580-k0.0680-00.gif", 0.058, 0.068),
    ("GrayScott-f0.0100-k0.0450-17.gif", 0.01, 0.045),
    ("f0.058_k0.068.gif", 0.058, 0.068),
    ("gs_f=0.058_k=0.068.gif", 0.058, 0.068),
    ("/some/folder/GrayScott-f0.0620-k0.0609-03.gif", 0.062, 0.0609),
])
def test_file_name_gives_f_and_k(name, f, k):
    got_f, got_k = tool.parse_f_k(name)

    assert got_f == pytest.approx(f, abs=1e-12)
    assert got_k == pytest.approx(k, abs=1e-12)


@pytest.mark.parametrize("name", ["movie.gif", "run-07.gif", "GrayScott-00.gif",
                                  "fk.gif"])
def test_file_name_without_f_and_k_gives_none(name):
    assert tool.parse_f_k(name) == (None, None)


@given(f=st.integers(1, 999), k=st.integers(1, 999), run=st.integers(0, 99))
def test_users_file_names_give_back_their_f_and_k(f, k, run):
    import grayscott_sim

    name = grayscott_sim.gif_name(f / 10_000, k / 10_000, run)
    got_f, got_k = tool.parse_f_k(name)

    assert (got_f, got_k) == (pytest.approx(f / 10_000), pytest.approx(k / 10_000))
