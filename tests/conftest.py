"""Shared helpers: GIFs written byte by byte, tiny simulated runs, running the script.

The GIF writer here is independent of Pillow's, so the tests can make exactly the
files our users have (GIF87a, no delays, one global palette) and the cases Pillow
will not write on request (local palettes, partial frames at an offset, transparency
with a chosen disposal).
"""

import hashlib
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
for folder in (REPO, TESTS):  # `import extract_latent_vectors`, `import grayscott_sim`
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

SCRIPT = REPO / "extract_latent_vectors.py"
GREY_PALETTE = [(i, i, i) for i in range(256)]
SCRIPT_TIMEOUT = 240  # seconds; a run of the script that takes longer has hung
# tiny settings so that a whole run of the script takes about a second
FAST = ["--epochs", "1", "--max-frames", "8", "--frame-size", "16",
        "--latent-dim", "4", "--n-clusters", "2"]


# -----------------------------------------------------------------------------------
# GIF files written by hand


@dataclass
class Frame:
    """One GIF image block: palette indices placed at (left, top) on the canvas."""

    indices: np.ndarray  # (height, width) palette indices
    left: int = 0
    top: int = 0
    palette: list | None = None  # a local colour table of (r, g, b); None: global
    transparency: int | None = None  # palette index drawn as transparent
    disposal: int = 0  # 0 unspecified, 1 keep, 2 restore background, 3 previous
    delay: int | None = None  # hundredths of a second; None writes no extension


def lzw_codes(indices, min_code_size=8, run=200):
    """LZW data that only ever sends literals, with a clear code every `run` pixels.

    A stream of literals is valid LZW: the decoder still grows its table, so a clear
    code is sent before the table could need a wider code.
    """
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    width = min_code_size + 1
    codes = []
    for start in range(0, len(indices), run):
        codes.append(clear)
        codes.extend(int(i) for i in indices[start:start + run])
    codes.append(end)
    bits, n_bits, out = 0, 0, bytearray()
    for code in codes:
        bits |= code << n_bits
        n_bits += width
        while n_bits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            n_bits -= 8
    if n_bits:
        out.append(bits & 0xFF)
    return bytes(out)


def sub_blocks(data):
    """Data split into GIF sub-blocks of at most 255 bytes, then the terminator."""
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255]
                      for i in range(0, len(data), 255))
    return blocks + b"\x00"


def colour_table(palette):
    """A 256-entry colour table as bytes (shorter palettes are padded with black)."""
    palette = list(palette) + [(0, 0, 0)] * (256 - len(palette))
    return bytes(c for rgb in palette for c in rgb)


def gif_bytes(width, height, frames, global_palette=GREY_PALETTE, version=b"GIF89a"):
    """A complete GIF file holding the given frames."""
    packed = 0xF7 if global_palette is not None else 0x70
    out = bytearray(version + struct.pack("<HHBBB", width, height, packed, 0, 0))
    if global_palette is not None:
        out += colour_table(global_palette)
    for frame in frames:
        indices = np.asarray(frame.indices, np.uint8)
        h, w = indices.shape
        if frame.delay is not None or frame.transparency is not None or frame.disposal:
            flags = (frame.disposal << 2) | (frame.transparency is not None)
            out += struct.pack("<BBBBHBB", 0x21, 0xF9, 4, flags, frame.delay or 0,
                               frame.transparency or 0, 0)
        local = 0x87 if frame.palette is not None else 0x00
        out += struct.pack("<BHHHHB", 0x2C, frame.left, frame.top, w, h, local)
        if frame.palette is not None:
            out += colour_table(frame.palette)
        out += bytes([8]) + sub_blocks(lzw_codes(indices.ravel()))
    out += b";"
    return bytes(out)


def write_gif(path, width, height, frames, **kwargs):
    """Write gif_bytes(...) to path and return the path."""
    path = Path(path)
    path.write_bytes(gif_bytes(width, height, frames, **kwargs))
    return path


def write_grey_movie(path, movie, version=b"GIF87a"):
    """Grey frames (frames, h, w) as the users write them: GIF87a, no delays."""
    movie = np.asarray(movie, np.uint8)
    frames = [Frame(frame) for frame in movie]
    return write_gif(path, movie.shape[2], movie.shape[1], frames, version=version)


def flat(level, size):
    """A size x size frame of one palette index."""
    return np.full((size, size), level, np.uint8)


# -----------------------------------------------------------------------------------
# tiny simulated runs in the users' naming and format

# (f, k) of the tiny runs: spots, stripes, waves and runs that die out
TINY_POINTS = [(0.0140, 0.0450), (0.0220, 0.0510), (0.0300, 0.0550),
               (0.0370, 0.0600), (0.0420, 0.0590), (0.0500, 0.0650)]


def make_tiny_runs(folder, points=TINY_POINTS, runs=2):
    """Simulate len(points) * runs tiny Gray-Scott movies into folder.

    Returns {file name: (f, k)}. The grid is 32 x 32 and 800 steps (17 frames), so
    the dozen runs take well under a second.
    """
    import grayscott_sim

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(f, k, run) for run in range(runs) for f, k in points]
    movies = grayscott_sim.simulate(
        [f for f, _, _ in jobs], [k for _, k, _ in jobs],
        [grayscott_sim.run_seed(*job) for job in jobs],
        steps=800, frame_every=50, size=32, workers=1,
    )  # (runs, 17, 32, 32)
    names = {}
    for (f, k, run), movie in zip(jobs, movies):
        name = grayscott_sim.gif_name(f, k, run)
        grayscott_sim.write_gif(folder / name, movie)
        names[name] = (f, k)
    return names


# -----------------------------------------------------------------------------------
# running the script and looking at what it wrote


def run_script(*args, cwd, timeout=SCRIPT_TIMEOUT):
    """Run extract_latent_vectors.py as a user would; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True,
        text=True, timeout=timeout, check=False,
    )


def sha256(path):
    """The SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_main(folder, *flags):
    """Run the tool in this process with the FAST settings; returns its exit status."""
    import extract_latent_vectors

    return extract_latent_vectors.main(["--gif-dir", str(folder), *FAST, *flags])


@pytest.fixture
def gif_dir(tmp_path):
    """An empty folder for GIFs."""
    folder = tmp_path / "gif"
    folder.mkdir()
    return folder
