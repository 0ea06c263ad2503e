"""Simulate Gray-Scott reaction-diffusion runs and save them as the users' GIF movies.

Only the tests and benchmarks use this file; the main tool never imports it. It makes
three sets of movies, each GIF in the users' exact format: named like
`GrayScott-f0.0580-k0.0680-00.gif` (f and k with 4 decimals, then a 2-digit run index),
grey levels of the u field (u = 1 is white), full frames, no frame delay, no loop, a
`GIF87a` header and one global 256-grey palette.

    python tests/grayscott_sim.py demo --out gif             # the demo set in gif/
    python tests/grayscott_sim.py labelled --out /tmp/labelled
    python tests/grayscott_sim.py fake --out /tmp/fake -n 1500

The simulation uses the users' settings: a 128 x 128 periodic grid, Du = 2e-5,
Dv = 1e-5, dx = 0.01, dt = 1 (explicit Euler, 5-point Laplacian), 10,000 steps, from
u = 1, v = 0 with a 20 x 20 centre square at u = 0.5, v = 0.25, all plus uniform noise
of +-0.1 clipped to [0, 1]. Many runs are stepped together as one float32 array.

- demo: 11 f x 10 k = 110 movies, 48 frames each at 64 x 64 (block means of the
  128 x 128 grid), so full 256 grey levels fit under the 15 MB cap. For each f the
  10 k values cross the diagonal band of the (f, k) plane where patterns form (a
  plain grid left three runs in four blank). Remade from scratch each time.
- labelled: 3 runs of every point of a classes CSV (class,f,k,...) with f <= 0.07 at
  full size (129 frames of 128 x 128) plus labels.csv; a run whose last frame is flat
  is labelled 'uniform'. A cache: existing GIFs are kept.
- fake: n movies at full size for speed benchmarks; 32 are simulated and the rest are
  hard links to them under other names. A cache as well.

Every run's seed is the CRC32 of its file name, so each file can be remade on its own
and every set is reproducible. Pillow's own multi-frame GIF writer cannot give the
users' format, so each frame is encoded by Pillow alone and the frames are joined here.
"""

import argparse
import csv
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from io import BytesIO, StringIO
from pathlib import Path

import numpy as np
from PIL import Image

# --- simulation: the users' settings
SIZE = 128  # side of the periodic grid, cells
DU = 2e-5  # diffusion coefficient of u
DV = 1e-5  # diffusion coefficient of v
DX = 0.01  # grid spacing; with dt = 1 the diffusion rates are 0.2 and 0.1 per step
STEPS = 10_000  # explicit Euler steps of dt = 1 per run
FRAME_EVERY = 78  # steps between frames; 10,000 steps give 129 frames (0 ... 9984)
NOISE = 0.1  # half-width of the uniform noise added to u and v at step 0
SQUARE = 20  # side of the seeded centre square, cells
SQUARE_U, SQUARE_V = 0.5, 0.25  # u and v inside the centre square before noise

# --- simulation: speed
CHUNK_RUNS = 8  # runs stepped together; 4 to 16 measured equally fast

# --- GIF files
GIF_NAME = "GrayScott-f{f:.4f}-k{k:.4f}-{run:02d}.gif"  # the users' file names
GREY_PALETTE = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))  # index i = grey i

# --- demo set
DEMO_F = (0.010, 0.070, 11)  # f values: first, last, count
DEMO_K = (0.040, 0.070, 10)  # k range and count per f value (rounded to 4 decimals)
DEMO_BAND = (0.042, 0.755, -5.42, 0.007)  # k centre = a + b f + c f^2; half-width
DEMO_FRAME_EVERY = 212  # 10,000 steps give 48 frames (steps 0, 212, ..., 9964)
DEMO_OUT_SIZE = 64  # frame side in the GIFs, pixels (block means of the grid)
DEMO_MAX_BYTES = 15_000_000  # the whole demo folder must stay below this

# --- labelled set
PEARSON_CSV = Path(__file__).resolve().parents[2] / "shared" / "pearson_classes.csv"
RUNS_PER_POINT = 3  # runs (seeds) per Pearson point
MAX_F = 0.07  # Pearson points with larger f are left out
UNIFORM_RANGE = 3  # last frame with max - min grey below this: 'uniform' (see below)
LABELS_NAME = "labels.csv"  # labels table written next to the labelled GIFs

# --- fake set
FAKE_N = 1500  # number of GIFs in the fake set
FAKE_SOURCES = 32  # distinct simulated movies; the other files are hard links to them
FAKE_F = (0.0100, 0.0700)  # f range of the fake names, step 0.0001
FAKE_K = (0.0400, 0.0700)  # k range of the fake names, step 0.0001


def gif_name(f, k, run):
    """Return the users' file name for run `run` at feed f and kill k."""
    return GIF_NAME.format(f=f, k=k, run=run)


def run_seed(f, k, run):
    """Return the seed of a run: the CRC32 of its file name."""
    return zlib.crc32(gif_name(f, k, run).encode())


def initial_state(seed, size=SIZE, noise=NOISE):
    """Return u and v at step 0 for one run: background, centre square, noise."""
    rng = np.random.default_rng(seed)
    u = np.ones((size, size))
    v = np.zeros((size, size))
    lo, hi = (size - SQUARE) // 2, (size + SQUARE) // 2
    u[lo:hi, lo:hi] = SQUARE_U
    v[lo:hi, lo:hi] = SQUARE_V
    u += rng.uniform(-noise, noise, (size, size))
    v += rng.uniform(-noise, noise, (size, size))
    return np.clip(u, 0, 1), np.clip(v, 0, 1)


def to_grey(u, out_size=None):
    """Turn u fields into grey frames, block-averaged down to out_size if given."""
    u = np.clip(u, 0, 1)  # (runs, size, size)
    if out_size is not None and out_size != u.shape[-1]:
        block = u.shape[-1] // out_size
        u = u.reshape(len(u), out_size, block, out_size, block).mean(axis=(2, 4))
    return np.rint(u * 255).astype(np.uint8)  # (runs, out_size, out_size)


def simulate_chunk(fs, ks, seeds, steps, frame_every, size, out_size, noise):
    """Step a few runs together and return their grey frames (see `simulate`)."""
    runs, side = len(fs), size + 2  # one ghost cell on each side holds the wrap
    cells, frames = side * side, steps // frame_every + 1
    out_side = out_size or size
    movies = np.empty((runs, frames, out_side, out_side), np.uint8)

    u = np.empty((runs, side, side), np.float32)
    v = np.empty((runs, side, side), np.float32)
    for run, seed in enumerate(seeds):
        u[run, 1:-1, 1:-1], v[run, 1:-1, 1:-1] = initial_state(seed, size, noise)
    u_next, v_next = np.empty_like(u), np.empty_like(v)
    uvv = np.empty((runs, cells - 2 * side), np.float32)  # u * v * v

    # Seen as flat rows of `cells` values, the four neighbours of every cell are the
    # same row shifted by -1, +1, -side and +side: contiguous slices, the fastest
    # thing numpy does (3x faster than np.roll). The update covers rows 1..size, ghost
    # columns included; those get garbage that the next wrap overwrites.
    middle = slice(side, cells - side)
    shifted = [slice(side + d, cells - side + d) for d in (-1, 1, -side, side)]

    def diffuse(field, field_next, centre, rate):
        """Write rate * (centre * field + its 4 neighbours) into field_next."""
        flat = field.reshape(runs, cells)
        new = field_next.reshape(runs, cells)[:, middle]
        np.multiply(flat[:, middle], centre, out=new)
        for neighbours in shifted:
            new += flat[:, neighbours]
        new *= rate
        return new

    # u' = u + ru lap(u) - u v v + f (1 - u) = ru (cu u + neighbours) - u v v + f
    # v' = v + rv lap(v) + u v v - (f + k) v = rv (cv v + neighbours) + u v v
    f = np.asarray(fs, np.float32)[:, None]  # (runs, 1)
    k = np.asarray(ks, np.float32)[:, None]  # (runs, 1)
    ru, rv = np.float32(DU / DX**2), np.float32(DV / DX**2)
    cu = (1 - 4 * ru - f) / ru  # (runs, 1)
    cv = (1 - 4 * rv - f - k) / rv  # (runs, 1)

    # Steps after the last frame change no frame, so they are not simulated.
    for step in range((frames - 1) * frame_every):
        if step % frame_every == 0:
            movies[:, step // frame_every] = to_grey(u[:, 1:-1, 1:-1], out_size)
        for field in (u, v):  # periodic wrap: ghost rows, then ghost columns
            field[:, 0], field[:, -1] = field[:, -2], field[:, 1]
            field[:, :, 0], field[:, :, -1] = field[:, :, -2], field[:, :, 1]

        v_mid = v.reshape(runs, cells)[:, middle]
        np.multiply(v_mid, v_mid, out=uvv)
        uvv *= u.reshape(runs, cells)[:, middle]
        new_u = diffuse(u, u_next, cu, ru)
        new_u -= uvv
        new_u += f
        new_v = diffuse(v, v_next, cv, rv)
        new_v += uvv
        u, u_next, v, v_next = u_next, u, v_next, v
    movies[:, -1] = to_grey(u[:, 1:-1, 1:-1], out_size)
    return movies  # (runs, frames, out_side, out_side)


def simulate(
    fs,
    ks,
    seeds,
    steps=STEPS,
    frame_every=FRAME_EVERY,
    size=SIZE,
    out_size=None,
    noise=NOISE,
    workers=None,
    verbose=False,
):
    """Simulate one run per (f, k, seed); return grey frames (runs, frames, H, W)."""
    if not len(fs) == len(ks) == len(seeds):
        raise ValueError("fs, ks and seeds must have the same length")
    if out_size is not None and size % out_size:
        raise ValueError(f"out_size {out_size} does not divide the grid size {size}")
    chunks = [slice(i, i + CHUNK_RUNS) for i in range(0, len(fs), CHUNK_RUNS)]
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    run_chunk = partial(
        simulate_chunk,
        steps=steps,
        frame_every=frame_every,
        size=size,
        out_size=out_size,
        noise=noise,
    )

    start, movies = time.perf_counter(), []
    with ProcessPoolExecutor(workers) as pool:  # starts no process unless used
        mapper = pool.map if workers > 1 else map
        chunk_args = [(list(fs[c]), list(ks[c]), list(seeds[c])) for c in chunks]
        for movie in mapper(run_chunk, *zip(*chunk_args)):
            movies.append(movie)
            if verbose:
                done, seconds = sum(map(len, movies)), time.perf_counter() - start
                print(f"  simulated {done}/{len(fs)} runs in {seconds:.1f} s")
    return np.concatenate(movies)  # (runs, frames, H, W)


def write_gif(path, frames):
    """Write grey frames (frames, H, W) as the users' GIF87a movie, atomically."""
    frames = np.asarray(frames, np.uint8)
    # Pillow's multi-frame writer drops repeated frames, crops each frame to what
    # changed and adds extension blocks (GIF89a). So each frame is encoded alone by
    # Pillow, which gives plain GIF87a with the grey palette, and the image blocks
    # are joined under one header here.
    parts = [_encode_frame(frame) for frame in frames]
    header = parts[0][: 13 + len(GREY_PALETTE)]  # signature, screen, palette
    body = b"".join(part[len(header) : -1] for part in parts)  # image blocks only
    _write_atomic(Path(path), header + body + b";")


def _encode_frame(frame):
    """Return one grey frame encoded by Pillow as a single-image GIF87a file."""
    buffer = BytesIO()
    Image.fromarray(frame, "L").save(buffer, "GIF", optimize=False)
    data = buffer.getvalue()
    palette_end = 13 + len(GREY_PALETTE)
    assert data[:6] == b"GIF87a", "Pillow no longer writes plain GIF87a"
    assert data[13:palette_end] == GREY_PALETTE, "Pillow changed the grey palette"
    assert data[palette_end] == 0x2C and data[-1] == 0x3B, "unexpected GIF blocks"
    return data


def _write_atomic(path, data):
    """Write bytes to a temporary file next to path, then move it into place."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def last_frame(path):
    """Return the last frame of a GIF movie as grey levels (H, W)."""
    with Image.open(path) as image:
        image.seek(image.n_frames - 1)
        return np.asarray(image.convert("L"))


def is_uniform(frame, max_range=UNIFORM_RANGE):
    """Tell whether a grey frame is flat: its max - min is below max_range."""
    # After 10,000 steps diffusion has smoothed every dead run to one exact grey, and
    # the live runs of the Pearson points span 41 grey levels or more, so any small
    # threshold splits them the same way.
    return int(frame.max()) - int(frame.min()) < max_range


def demo_k_values(f):
    """k values for one f, across the band where patterns form (the rest is blank)."""
    a, b, c, half = DEMO_BAND  # fitted by eye to where a plain grid showed patterns
    low, high, count = DEMO_K
    centre = min(max(a + b * f + c * f * f, low + half), high - half)
    return np.linspace(centre - half, centre + half, count)


def make_demo_set(out_dir, workers=None):
    """Simulate the demo grid of f and k and write its GIFs; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = [
        (round(float(f), 4), round(float(k), 4))
        for f in np.linspace(*DEMO_F)
        for k in demo_k_values(f)
    ]
    fs, ks = [f for f, _ in points], [k for _, k in points]
    seeds = [run_seed(f, k, 0) for f, k in points]
    movies = simulate(
        fs,
        ks,
        seeds,
        frame_every=DEMO_FRAME_EVERY,
        out_size=DEMO_OUT_SIZE,
        workers=workers,
        verbose=True,
    )  # (runs, 48, 64, 64)
    paths = [out_dir / gif_name(f, k, 0) for f, k in points]
    for path, movie in zip(paths, movies):
        write_gif(path, movie)
    return paths


def read_points(csv_path, max_f=MAX_F):
    """Return the (class, f, k) points of a classes CSV with f <= max_f."""
    points, seen = [], {}
    with open(csv_path, newline="") as file:
        reader = csv.DictReader(file)
        if not {"class", "f", "k"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{csv_path} needs the columns class, f and k")
        for row in reader:
            f, k = float(row["f"]), float(row["k"])
            # A point listed twice (delta 0.030/0.055 comes from two sources) is
            # simulated once: points are keyed by their file name (f and k to 4
            # decimals) and the first class listed keeps the point.
            key = gif_name(f, k, 0)
            if f > max_f or key in seen:
                continue
            seen[key] = row["class"]
            points.append((row["class"], f, k))
    return points


def make_labelled_set(
    out_dir, csv_path, runs_per_point=RUNS_PER_POINT, max_f=MAX_F, workers=None,
    steps=STEPS,
):
    """Simulate runs of every classes-CSV point, write GIFs and a labels table."""
    runs = [
        (cls, f, k, run)
        for cls, f, k in read_points(csv_path, max_f)
        for run in range(runs_per_point)
    ]
    if not runs:
        raise ValueError(f"no points with f <= {max_f} in {csv_path}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [job for job in runs if not (out_dir / gif_name(*job[1:])).exists()]
    print(f"{len(runs)} runs, {len(runs) - len(missing)} already in {out_dir}")

    batch = CHUNK_RUNS * (workers or os.cpu_count() or 1) * 2  # keep memory modest
    for i in range(0, len(missing), batch):
        jobs = missing[i : i + batch]
        movies = simulate(
            [f for _, f, _, _ in jobs],
            [k for _, _, k, _ in jobs],
            [run_seed(f, k, run) for _, f, k, run in jobs],
            steps=steps,
            frame_every=steps // (STEPS // FRAME_EVERY),  # 129 frames at any length
            workers=workers,
        )  # (runs, 129, 128, 128)
        for (_, f, k, run), movie in zip(jobs, movies):
            write_gif(out_dir / gif_name(f, k, run), movie)
        print(f"  wrote {i + len(jobs)}/{len(missing)} new GIFs")

    labels = []
    for cls, f, k, run in runs:
        name = gif_name(f, k, run)
        flat = is_uniform(last_frame(out_dir / name))
        labels.append(
            {
                "filename": name,
                "f": f,
                "k": k,
                "class": "uniform" if flat else cls,
                "point_class": cls,
            }
        )
    table = StringIO()
    writer = csv.DictWriter(table, list(labels[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(labels)
    _write_atomic(out_dir / LABELS_NAME, table.getvalue().encode())
    return labels


def fake_names(n):
    """Return n distinct file names spread evenly over the fake f-k range."""
    f_count = round((FAKE_F[1] - FAKE_F[0]) / 1e-4) + 1
    k_count = round((FAKE_K[1] - FAKE_K[0]) / 1e-4) + 1
    if n > f_count * k_count:
        raise ValueError(f"at most {f_count * k_count} fake names, asked for {n}")
    picks = np.unique(np.linspace(0, f_count * k_count - 1, n).round().astype(int))
    assert len(picks) == n, "fake names collide"
    return [
        (
            round(FAKE_F[0] + 1e-4 * (i // k_count), 4),
            round(FAKE_K[0] + 1e-4 * (i % k_count), 4),
        )
        for i in picks
    ]


def make_fake_set(out_dir, n=FAKE_N, sources=FAKE_SOURCES, workers=None):
    """Make n GIFs in the users' format cheaply: a few simulated, the rest links."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = fake_names(n)
    # Files come in blocks of consecutive names; the first file of a block is
    # simulated with its own f and k and the others are hard links to it, so most
    # movies do not match their names. Fine for timing, not for anything else.
    block = -(-n // min(sources, n))
    heads = [points[i] for i in range(0, n, block)]
    missing = [p for p in heads if not (out_dir / gif_name(*p, 0)).exists()]
    if missing:
        print(f"simulating {len(missing)} source movies")
        movies = simulate(
            [f for f, _ in missing],
            [k for _, k in missing],
            [run_seed(f, k, 0) for f, k in missing],
            workers=workers,
            verbose=True,
        )  # (runs, 129, 128, 128)
        for (f, k), movie in zip(missing, movies):
            write_gif(out_dir / gif_name(f, k, 0), movie)

    for i, (f, k) in enumerate(points):
        path = out_dir / gif_name(f, k, 0)
        if not path.exists():
            os.link(out_dir / gif_name(*heads[i // block], 0), path)
    return [out_dir / gif_name(f, k, 0) for f, k in points]


def folder_bytes(paths):
    """Return the bytes on disk of the given files, each inode counted once."""
    inodes = {}
    for path in paths:
        stat = os.stat(path)
        inodes[stat.st_ino] = stat.st_size
    return sum(inodes.values())


def positive_int(text):
    """Parse a command-line count that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None):
    """Parse the command line and make the requested set of GIFs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="remake the demo set (110 small GIFs)")
    demo.add_argument("--out", type=Path, required=True, help="output folder")
    labelled = commands.add_parser(
        "labelled", help="runs of the Pearson points with a labels table (a cache)"
    )
    labelled.add_argument("--out", type=Path, required=True, help="output folder")
    labelled.add_argument(
        "--csv",
        type=Path,
        default=PEARSON_CSV,
        help=f"classes CSV with columns class,f,k (default: {PEARSON_CSV})",
    )
    labelled.add_argument(
        "--runs",
        type=positive_int,
        default=RUNS_PER_POINT,
        help=f"runs (seeds) per point (default: {RUNS_PER_POINT})",
    )
    labelled.add_argument(
        "--max-f",
        type=float,
        default=MAX_F,
        help=f"leave out points with a larger f (default: {MAX_F})",
    )
    fake = commands.add_parser(
        "fake", help="many GIFs for speed benchmarks, mostly hard links (a cache)"
    )
    fake.add_argument("--out", type=Path, required=True, help="output folder")
    fake.add_argument(
        "-n",
        type=positive_int,
        default=FAKE_N,
        help=f"number of GIFs (default: {FAKE_N})",
    )
    for command in (demo, labelled, fake):
        command.add_argument(
            "--workers",
            type=positive_int,
            default=None,
            help="simulation processes (default: one per CPU)",
        )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print(
        f"{args.command} set into {args.out} with {args.workers or os.cpu_count()}"
        " worker processes"
    )
    if args.command == "demo":
        paths = make_demo_set(args.out, args.workers)
    elif args.command == "labelled":
        if not args.csv.is_file():
            sys.exit(f"error: classes CSV not found: {args.csv}; pass --csv PATH")
        try:
            labels = make_labelled_set(
                args.out, args.csv, args.runs, args.max_f, args.workers
            )
        except ValueError as error:
            sys.exit(f"error: {error}")
        paths = [args.out / row["filename"] for row in labels]
        counts = {}
        for row in labels:
            counts[row["class"]] = counts.get(row["class"], 0) + 1
        print("labels:", ", ".join(f"{c} {n}" for c, n in sorted(counts.items())))
        print(f"wrote {args.out / LABELS_NAME}")
    else:
        paths = make_fake_set(args.out, args.n, workers=args.workers)
    size, seconds = folder_bytes(paths), time.perf_counter() - start
    print(
        f"{len(paths)} GIFs in {args.out} ({size / 1e6:.1f} MB) after {seconds:.0f} s"
    )
    if args.command == "demo" and size > DEMO_MAX_BYTES:
        print(
            f"warning: the demo set is over {DEMO_MAX_BYTES / 1e6:.0f} MB; "
            "use fewer frames or coarser grey levels"
        )


if __name__ == "__main__":
    main()
