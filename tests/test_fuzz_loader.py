"""Property test of the GIF loader on random and damaged GIFs (issue 5).

Hypothesis writes small GIFs of random sizes, frame counts, palettes, transparency,
disposal methods and frame placements (by hand, and through Pillow's writer), then
damages some of them (cut short, bytes changed or inserted, canvas size rewritten).
Whatever the file, read_movie must return a (max_frames, frame_size, frame_size)
uint8 movie or raise GifError; any other exception is a bug. Run with -s to see how
many cases ran and how they ended.
"""

import io
import struct
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
for folder in (ROOT, TESTS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from conftest import GREY_PALETTE, Frame, gif_bytes

import extract_latent_vectors as tool

N_CASES = 200


@st.composite
def hand_made_gifs(draw):
    """GIFs written block by block: any placement, palette, transparency, disposal."""
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_colours = draw(st.integers(1, 256))

    def palette():
        return [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(n_colours)]

    global_palette = draw(st.sampled_from(["grey", "random", "none"]))
    global_palette = {"grey": GREY_PALETTE, "random": palette(), "none": None}[
        global_palette]
    frames = []
    for _ in range(draw(st.integers(1, 4))):
        w, h = draw(st.integers(1, width + 4)), draw(st.integers(1, height + 4))
        frames.append(Frame(
            rng.integers(0, n_colours, (h, w)).astype(np.uint8),
            left=draw(st.integers(0, width)), top=draw(st.integers(0, height)),
            palette=palette() if draw(st.booleans()) else None,
            transparency=draw(st.none() | st.integers(0, 255)),
            disposal=draw(st.integers(0, 7)),
            delay=draw(st.none() | st.integers(0, 100)),
        ))
    version = draw(st.sampled_from([b"GIF87a", b"GIF89a"]))
    return gif_bytes(width, height, frames, global_palette=global_palette,
                     version=version)


@st.composite
def pillow_gifs(draw):
    """GIFs from Pillow's writer, in each image mode it takes, with its options."""
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    mode = draw(st.sampled_from(["L", "P", "RGB", "RGBA"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.integers(1, 256))  # few levels make runs and reused palettes
    frames = []
    for _ in range(draw(st.integers(1, 5))):
        pixels = (rng.integers(0, levels, (height, width, 4)) * (255 // max(1, levels - 1)))
        frames.append(Image.fromarray(pixels.astype(np.uint8), "RGBA").convert(mode))
    options = {
        "disposal": draw(st.integers(0, 3)),
        "optimize": draw(st.booleans()),
        "interlace": draw(st.booleans()),
        "duration": draw(st.integers(0, 200)),
    }
    if mode in ("L", "P") and draw(st.booleans()):
        options["transparency"] = draw(st.integers(0, 255))
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], **options)
    return buffer.getvalue()


@st.composite
def damaged(draw, gifs):
    """A GIF, maybe cut short, with bytes changed or inserted, or a new canvas size."""
    data = bytearray(draw(gifs))
    damage = draw(st.sampled_from(["none", "cut", "changed", "inserted", "canvas"]))
    if damage == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "changed":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif damage == "inserted":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    elif damage == "canvas":
        data[6:10] = struct.pack("<HH", draw(st.integers(0, 65535)),
                                 draw(st.integers(0, 65535)))
    return bytes(data), damage


def test_loader_gives_a_movie_or_gif_error_for_any_gif(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "case.gif"
    outcomes = Counter()

    @settings(max_examples=N_CASES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=damaged(st.one_of(hand_made_gifs(), pillow_gifs())),
           max_frames=st.sampled_from([8, 16]), frame_size=st.sampled_from([16, 32]))
    def check(case, max_frames, frame_size):
        data, damage = case
        path.write_bytes(data)
        try:
            movie, note = tool.read_movie(path, max_frames, frame_size)
        except tool.GifError as exc:
            assert str(exc), "a GifError without a reason"
            outcome = "refused"
        else:
            assert isinstance(movie, np.ndarray)
            assert movie.shape == (max_frames, frame_size, frame_size)
            assert movie.dtype == np.uint8
            assert note is None or isinstance(note, str)
            outcome = "read" if note is None else "read with a note"
        event(f"{damage}: {outcome}")
        outcomes[damage, outcome] += 1

    check()

    total = sum(outcomes.values())
    print(f"\nloader fuzzing: {total} GIFs tried")
    for (damage, outcome), count in sorted(outcomes.items()):
        print(f"  {damage:>8}: {outcome:<17} {count}")
    assert total >= N_CASES * 0.9
    assert outcomes["none", "read"] > 0 and sum(
        n for (_, outcome), n in outcomes.items() if outcome == "refused") > 0
