"""How fast and how lean is the tool on the users' data sizes? Prints one table.

Makes N GIFs in the users' format (128x128, 129 frames; cached in tests/.cache), runs
the tool on them as a user would, and reports per step the wall time, throughput and
peak resident memory that the tool itself logs:

    python tests/bench_speed.py                     # 390 and 1,500 GIFs, 15,600 encode-only
    python tests/bench_speed.py --sizes 390 --encode-only 0 --no-references   # quick look
    python tests/bench_speed.py --tsne-only         # t-SNE of 15,600 latents alone

For each size: a first run (decode, train 20 epochs, encode, t-SNE, writing) and a
rerun with the trained model and unchanged GIFs. For 15,600 GIFs: the encode-only pass
with a model trained on 1,500. In the same run, on the same 1,500 files, two
references: Pillow decoding every frame on one core (the floor we build on), and the
earlier approach (every movie decoded in one process into float32, first 32 frames,
its Conv3d autoencoder) for the decode and one training epoch.

It also counts the model's floating-point operations per movie and compares the
training rate with what this CPU reaches in a plain float32 matrix multiply.
Not part of the test suite: it runs for about half an hour on 2 cores.
"""

import argparse
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageSequence

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import earlier_approach
import grayscott_sim

import extract_latent_vectors as tool

CACHE = REPO / "tests" / ".cache"  # fake GIF sets, one folder per size
SIZES = (390, 1500)  # full runs
ENCODE_ONLY = 15_600  # encode-only pass with the model trained on the largest size
STEP_PATTERN = re.compile(r"([\w-]+) ([\d.]+) s")


def gif_set(n):
    """A folder of n GIFs in the users' format, with no outputs of earlier runs."""
    folder = CACHE / f"fake-{n}"
    grayscott_sim.make_fake_set(folder, n)
    for path in folder.iterdir():
        if path.suffix.lower() != ".gif":
            path.unlink()
    return folder


def run_tool(folder, *flags):
    """Run the tool as a user would; returns (wall seconds, {step: seconds}, peak MB)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "extract_latent_vectors.py"),
                           "--gif-dir", str(folder), *flags],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the tool failed on {folder}:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stderr.splitlines() if x.startswith("time per step"))
    steps = {name: float(sec) for name, sec in STEP_PATTERN.findall(line)}
    peak = float(re.search(r"peak memory (\d+) MB", line).group(1))
    return wall, steps, peak


def pillow_floor(paths):
    """Seconds for Pillow to decode every frame of every GIF on one core."""
    start, frames = time.perf_counter(), 0
    for path in paths:
        with Image.open(path) as gif:
            for frame in ImageSequence.Iterator(gif):
                frame.load()
                frames += 1
    return time.perf_counter() - start, frames


def earlier_reference(paths):
    """The earlier approach's decode and one training epoch, in a fresh process."""
    code = (
        "import sys, time, resource; sys.path[:0] = sys.argv[1:3];"
        "import earlier_approach as e; from pathlib import Path;"
        "paths = sorted(Path(sys.argv[3]).glob('*.gif'));"
        "t = time.perf_counter(); movies = e.load_first_frames(paths);"
        "decode = time.perf_counter() - t;"
        "t = time.perf_counter(); e.train_epochs(movies, 1);"
        "epoch = time.perf_counter() - t;"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024;"
        "print(decode, epoch, peak, movies.nbytes / 2**20)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO), str(REPO / "tests"),
                          str(paths[0].parent)], capture_output=True, text=True,
                         check=True).stdout.split()
    return [float(x) for x in out]


def flops_per_movie():
    """Floating-point operations of one training step and one encoding, per movie."""
    from torch.utils.flop_counter import FlopCounterMode

    model = tool.MovieAutoencoder()
    batch = torch.rand(tool.BATCH_SIZE, 1, tool.MAX_FRAMES, tool.FRAME_SIZE,
                       tool.FRAME_SIZE)  # (batch, 1, frames, height, width)
    with FlopCounterMode(display=False) as train:
        loss, _ = tool.training_loss(model, batch, torch.Generator().manual_seed(0))
        loss.backward()
    with FlopCounterMode(display=False) as encode, torch.no_grad():
        model.encode(batch)
    earlier = earlier_approach.EarlierAutoencoder()
    with FlopCounterMode(display=False) as old:
        torch.nn.functional.mse_loss(earlier(batch), batch).backward()
    n = len(batch)
    return (train.get_total_flops() / n, encode.get_total_flops() / n,
            old.get_total_flops() / n)


def matmul_rate(size=2048, repeats=10):
    """GFLOP/s of a plain float32 matrix multiply on this CPU, all cores."""
    a = torch.rand(size, size)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def tsne_of_spread_latents(n, seed=0):
    """Seconds for the tool's t-SNE of n latents spread like real ones.

    The fake GIF sets repeat 32 movies, so their latents are 32 points many times
    over, which flatters t-SNE; these are 60 clusters of noisy 32-d vectors.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, tool.LATENT_DIM)) * 3
    latents = centres[rng.integers(0, 60, n)] + rng.normal(size=(n, tool.LATENT_DIM))
    start = time.perf_counter()
    tool.run_tsne(latents.astype(np.float32), seed)
    return time.perf_counter() - start


def row(what, n, seconds, peak=None, frames=tool.MAX_FRAMES, samples=None):
    """One table row: wall time, throughput, peak memory."""
    rate = f"{n / seconds:,.1f} GIF/s, {n * frames / seconds:,.0f} frames/s"
    if samples:
        rate = f"{samples / seconds:,.1f} samples/s"
    memory = f"{peak:,.0f}" if peak is not None else ""
    print(f"| {what} | {n:,} | {seconds:,.1f} | {rate} | {memory} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES,
                        help="GIF counts for full runs")
    parser.add_argument("--encode-only", type=int, default=ENCODE_ONLY,
                        help="GIF count for the encode-only pass (0 skips it)")
    parser.add_argument("--no-references", action="store_true",
                        help="skip the Pillow floor and the earlier approach")
    parser.add_argument("--tsne-only", action="store_true",
                        help="only time t-SNE of --encode-only spread-out latents")
    args = parser.parse_args(argv)
    if args.tsne_only:
        n = args.encode_only
        print(f"t-SNE of {n:,} spread-out latents: "
              f"{tsne_of_spread_latents(n):.1f} s")
        return 0

    cores = len(os.sched_getaffinity(0))
    print(f"{platform.processor() or platform.machine()}, {cores} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| step | GIFs | seconds | throughput | peak MB |")
    print("|---|---|---|---|---|")
    firsts = {}
    for n in args.sizes:
        folder = gif_set(n)
        wall, steps, peak = run_tool(folder, "--retrain")
        firsts[n] = (wall, steps, folder)
        samples = n * tool.EPOCHS
        row(f"decode ({n:,})", n, steps["decode"], frames=129)
        row(f"train {tool.EPOCHS} epochs ({n:,})", n, steps["train"], samples=samples)
        row(f"encode ({n:,})", n, steps["encode"])
        row(f"t-SNE ({n:,})", n, steps["t-SNE"])
        row(f"writing ({n:,})", n, steps["writing"])
        row(f"**whole first run ({n:,})**", n, wall, peak)
        rewall, _, repeak = run_tool(folder)
        row(f"rerun, model and GIFs unchanged ({n:,}): {rewall / wall:.1%} of first",
            n, rewall, repeak)

    if args.encode_only:
        n, largest = args.encode_only, max(firsts)
        folder = gif_set(n)
        shutil.copy(firsts[largest][2] / tool.MODEL_FILE, folder / tool.MODEL_FILE)
        wall, steps, peak = run_tool(folder)
        row(f"decode ({n:,}, encode-only)", n, steps["decode"], frames=129)
        row(f"encode ({n:,})", n, steps["encode"])
        row(f"t-SNE ({n:,})", n, steps["t-SNE"])
        row(f"**whole encode-only run ({n:,})**", n, wall, peak)
        row(f"t-SNE of {n:,} spread-out latents (not 32 repeated ones)", n,
            tsne_of_spread_latents(n))

    largest = max(firsts)
    if not args.no_references:
        paths = sorted(firsts[largest][2].glob("*.gif"))
        seconds, frames = pillow_floor(paths)
        row(f"reference: Pillow decodes every frame, 1 core ({largest:,})", largest,
            seconds, frames=frames / largest)
        decode, epoch, peak, held = earlier_reference(paths)
        row(f"reference: earlier approach, decode to float32 ({largest:,}; "
            f"{held:,.0f} MB of movies)", largest, decode, peak)
        row(f"reference: earlier approach, 1 training epoch ({largest:,})", largest,
            epoch, samples=largest)
        earlier_run = decode + tool.EPOCHS * epoch
        ours = firsts[largest][0]
        print(f"\nearlier approach, {tool.EPOCHS} epochs (decode + {tool.EPOCHS} x one "
              f"epoch): {earlier_run:,.0f} s; ours: {ours:,.0f} s, "
              f"{earlier_run / ours:.1f}x faster")

    train_flops, encode_flops, old_flops = flops_per_movie()
    rate = matmul_rate()
    steps = firsts[largest][1]
    achieved = train_flops * largest * tool.EPOCHS / steps["train"] / 1e9
    print(f"\nmodel: {train_flops / 1e6:,.0f} MFLOP per movie per training step, "
          f"{encode_flops / 1e6:,.0f} MFLOP per encoding (earlier model: "
          f"{old_flops / 1e6:,.0f} MFLOP per training step)")
    print(f"training achieved {achieved:,.1f} GFLOP/s; a float32 2048x2048 matrix "
          f"multiply reaches {rate:,.1f} GFLOP/s here ({achieved / rate:.0%})")
    print(f"peak memory of this benchmark's children: "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
