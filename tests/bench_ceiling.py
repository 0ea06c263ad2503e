"""How high can any features score on the labelled benchmark? A ceiling study.

Issue 3 asks the tool's latents for a balanced accuracy of 0.70 and 0.10 above every
baseline, (f, k) alone included (0.61). This script asks whether the labelled set
allows that at all. It builds the descriptors a physicist would reach for from the
full movies (129 frames of 128 x 128) and scores them with the benchmark's own
leave-one-point-out 5-nearest-neighbour rule, three ways, each kinder than the last:

    equal blocks    every descriptor block standardised and weighted the same
    best weighting  the best of --tries random block weightings, chosen on this very
                    benchmark (so it flatters itself: an upper estimate)
    supervised      a classifier trained on the class labels of the other points,
                    with and without (f, k); no unsupervised latent gets labels

    python tests/bench_ceiling.py                  # after bench_quality.py made the set
    python tests/bench_ceiling.py --tries 300
    python tests/bench_ceiling.py --steps 50000   # runs 5x longer, in their own folder
    python tests/bench_ceiling.py --frames 32 --frame-size 64   # what the tool reads

Not part of the test suite: it takes a few minutes and prints a table.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import bench_quality
import grayscott_sim

import extract_latent_vectors as tool

FRAMES, SIZE = 129, 128  # the simulator's movies, every frame at full size
LATE_SHARE = 8  # the last 1/8 of the frames, where the settled pattern shows
SPECTRUM_BINS = 40  # wave numbers of the radial power spectrum kept
THRESHOLDS = (0.3, 0.5, 0.7)  # grey levels (u) that cut a frame into pattern and not
WEIGHTS = (0, 0, 0.5, 1, 2)  # a random block weighting draws each weight from these
GOAL = 0.70  # the balanced accuracy issue 3 asks for


def minkowski(pattern):
    """Area, perimeter and Euler characteristic of binary frames on a periodic grid."""
    # (..., height, width) bool; bit-quad counts of Gray (1971), 4-connected pattern
    right = np.roll(pattern, -1, -1)
    down = np.roll(pattern, -1, -2)
    quad = pattern.astype(np.int8) + right + down + np.roll(right, -1, -2)
    diagonal = (quad == 2) & (pattern == np.roll(right, -1, -2))
    euler = ((quad == 1).sum((-2, -1)) - (quad == 3).sum((-2, -1))
             + 2 * diagonal.sum((-2, -1))) / 4
    perimeter = (pattern != right).sum((-2, -1)) + (pattern != down).sum((-2, -1))
    return pattern.mean((-2, -1)), perimeter / pattern[0].size, euler


def descriptor_blocks(paths, frames=FRAMES, size=SIZE):
    """name -> (runs, columns) descriptor block, from movies read at this size."""
    blocks = {}
    for path in paths:
        movie, _ = tool.read_movie(path, frames, size)
        u = movie.astype(np.float32) / 255  # (frames, height, width)
        late = u[-(frames // LATE_SHARE):]
        row = {
            "mean u per frame": u.mean((1, 2)),
            "spread of u per frame": u.std((1, 2)),
            "change per frame": np.abs(np.diff(u, axis=0)).mean((1, 2)),
            "spectrum of late frames": np.log1p(
                bench_quality.radial_spectrum(late, SPECTRUM_BINS).mean(0)),
            "histogram of late frames": np.histogram(late, 16, (0, 1))[0] / late.size,
        }
        for threshold in THRESHOLDS:
            area, perimeter, euler = minkowski(u < threshold)
            row[f"area u<{threshold} per frame"] = area
            row[f"perimeter u<{threshold} per frame"] = perimeter
            row[f"Euler characteristic u<{threshold} per frame"] = euler
        for name, values in row.items():
            blocks.setdefault(name, []).append(values)
    return {name: np.array(rows, np.float64) for name, rows in blocks.items()}


def weighted(blocks, weights):
    """Blocks standardised, scaled to count equally, times their weight, side by side."""
    columns = []
    for name, weight in weights.items():
        x = tool.standardise(blocks[name])
        columns.append(x * weight / np.sqrt(x.shape[1]))
    return np.concatenate(columns, 1)


def balanced_accuracy(features, classes, f, k):
    """The benchmark's leave-one-point-out 5-nearest-neighbour balanced accuracy."""
    from sklearn.metrics import balanced_accuracy_score

    predicted = bench_quality.predict_classes(features, classes, f, k)
    return balanced_accuracy_score(classes, predicted)


def best_weighting(blocks, classes, f, k, tries, seed):
    """The best of `tries` random block weightings on this benchmark, and its score."""
    rng = np.random.default_rng(seed)
    best, best_weights = -1.0, None
    for _ in range(tries):
        weights = {name: float(rng.choice(WEIGHTS)) for name in blocks}
        if not any(weights.values()):
            continue
        score = balanced_accuracy(weighted(blocks, weights), classes, f, k)
        if score > best:
            best, best_weights = score, weights
    return best, best_weights


def supervised(features, classes, f, k, model):
    """Balanced accuracy of a classifier trained on the labels of the other points."""
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score

    point = bench_quality.point_ids(f, k)
    predicted = np.empty(len(classes), dtype=object)
    for held_out in np.unique(point):
        test = point == held_out
        fitted = clone(model).fit(features[~test], classes[~test])
        predicted[test] = fitted.predict(features[test])
    return balanced_accuracy_score(classes, predicted.astype(str))


def main(argv=None):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gif-dir", type=Path,
                        help="where the labelled GIFs are cached (default: the "
                             "benchmark's folder, or one per --steps)")
    parser.add_argument("--steps", type=int, default=grayscott_sim.STEPS,
                        help="simulation steps per run, still written as 129 frames "
                             f"(default {grayscott_sim.STEPS}, the users' setting)")
    parser.add_argument("--frames", type=int, default=FRAMES,
                        help=f"frames read per movie (default {FRAMES}: all)")
    parser.add_argument("--frame-size", type=int, default=SIZE,
                        help=f"frames resized to this many pixels (default {SIZE}; "
                             f"the tool reads {tool.MAX_FRAMES} of {tool.FRAME_SIZE})")
    parser.add_argument("--tries", type=int, default=100,
                        help="random block weightings to try (default 100)")
    args = parser.parse_args(argv)

    if args.gif_dir is None:
        args.gif_dir = bench_quality.CACHE_DIR
        if args.steps != grayscott_sim.STEPS:
            args.gif_dir = args.gif_dir.with_name(f"labelled-{args.steps}-steps")

    start = time.perf_counter()
    grayscott_sim.make_labelled_set(args.gif_dir, bench_quality.CLASSES_CSV,
                                    steps=args.steps)
    names, f, k, classes = bench_quality.labelled_runs(args.gif_dir)
    blocks = descriptor_blocks([args.gif_dir / n for n in names], args.frames,
                               args.frame_size)
    print(f"{len(blocks)} descriptor blocks of {len(names)} runs: "
          f"{time.perf_counter() - start:.0f} s", flush=True)

    fk = np.stack([f, k], 1)
    everything = weighted(blocks, dict.fromkeys(blocks, 1.0))
    with_fk = np.c_[everything, tool.standardise(fk)]
    rows = {"(f, k) alone, for comparison": balanced_accuracy(fk, classes, f, k)}
    for name, block in blocks.items():
        rows[f"one block: {name}"] = balanced_accuracy(block, classes, f, k)
    rows["all blocks, equal weights"] = balanced_accuracy(everything, classes, f, k)
    rows["all blocks + (f, k), equal weights"] = balanced_accuracy(
        with_fk, classes, f, k)
    best, weights = best_weighting(blocks, classes, f, k, args.tries, bench_quality.SEED)
    rows[f"best of {args.tries} block weightings, chosen on this benchmark"] = best
    models = {
        "logistic regression": LogisticRegression(max_iter=2000),
        "random forest": RandomForestClassifier(300, random_state=bench_quality.SEED),
    }
    for name, model in models.items():
        rows[f"supervised {name} on all blocks"] = supervised(
            everything, classes, f, k, model)
        rows[f"supervised {name} on all blocks + (f, k)"] = supervised(
            with_fk, classes, f, k, model)

    print("\n| features, scored by the benchmark's leave-one-point-out rule | bal_acc |")
    print("|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.3f} |")
    print(f"\nbest weighting: {', '.join(f'{n} {w:g}' for n, w in weights.items() if w)}")
    fk_alone = rows.pop("(f, k) alone, for comparison")
    highest, target = max(rows.values()), max(GOAL, fk_alone + 0.10)
    verdict = "reaches" if highest >= target else "falls short of"
    print(f"the best of these features, {highest:.3f}, {verdict} the {target:.3f} "
          "that issue 3 asks for (0.70, and 0.10 above (f, k) alone)")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
