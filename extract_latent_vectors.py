#!/usr/bin/env python3
"""Learn one latent vector per Gray-Scott GIF, then map and cluster the runs by it.

Each GIF in the folder is one simulation run (u field as grey levels). A small 3D
convolutional autoencoder learns a compact vector from the pixels of every movie, so
that runs can be compared by what they do rather than by their (f, k) parameters.
The tool writes, in the GIF folder:

    grayscott_latent_vectors.csv   filename, f, k, z0..z31 for every readable GIF
    grayscott_combined_data.csv    the same plus t-SNE coordinates and clusters
    latent_space_tsne.png          t-SNE map coloured by f (and ..._k.png by k)
    latent_clusters_fk.png         the latent clusters drawn on the (f, k) plane
    reconstructions.png            movies over what the autoencoder rebuilds
    training_loss.png              the loss per epoch
    conv3d_autoencoder_grayscott.pth   the trained model, reused by later runs

Usage:

    ./extract_latent_vectors.py                      # the GIFs in ./gif
    ./extract_latent_vectors.py --gif-dir runs/ --epochs 40
    ./extract_latent_vectors.py --retrain --latent-dim 16
"""

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import io
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import GifImagePlugin, Image, ImageSequence
from torch import nn
from tqdm import tqdm

try:  # file locks keep two runs on one folder apart; Windows has no fcntl
    import fcntl
    import resource
except ImportError:  # pragma: no cover
    fcntl = resource = None

# --- data: where the movies are and how each becomes a tensor --------------------
GIF_DIR = "gif"  # folder of GrayScott-f0.0580-k0.0680-00.gif files, relative to cwd
MAX_FRAMES = 32  # frames taken per movie, evenly spread from first to last
FRAME_SIZE = 64  # frames are resized to FRAME_SIZE x FRAME_SIZE pixels
MAX_CANVAS_PIXELS = 4096 * 4096  # larger GIF canvases are refused (decompression bombs)
DECODE_CHUNK = 512  # GIFs decoded at a time when only encoding (bounds memory)

# --- model: the Conv3d autoencoder ---------------------------------------------------
LATENT_DIM = 32  # length of the latent vector written for every GIF
WIDTH = 16  # channels of the first encoder layer; later layers double it
ARCHITECTURE = 2  # bumped whenever the network changes, so old models are refused

# --- training --------------------------------------------------------------------
BATCH_SIZE = 16  # movies per optimisation step
EPOCHS = 20  # passes over all GIFs
LEARNING_RATE = 1e-3  # AdamW step size
INVARIANCE = 1.0  # weight of the VICReg term that makes two views of a movie agree
VICREG_COV_WEIGHT = 25.0  # the covariance term counts 1/25 of the other two
SEED = 1234  # seeds Python, NumPy, PyTorch, t-SNE and k-means
ENCODE_BATCH = 64  # movies per encoding step (does not change the vectors)

# --- outputs, all written into the GIF folder --------------------------------------
MODEL_FILE = "conv3d_autoencoder_grayscott.pth"
LATENT_CSV = "grayscott_latent_vectors.csv"
COMBINED_CSV = "grayscott_combined_data.csv"
CLUSTERS_CSV = "grayscott_clusters.csv"  # the users' own clustering, read if present
TSNE_F_PNG = "latent_space_tsne.png"
TSNE_K_PNG = "latent_space_tsne_k.png"
CLUSTERS_FK_PNG = "latent_clusters_fk.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
LOSS_PNG = "training_loss.png"
CACHE_FILE = ".grayscott_latent_cache.npz"  # latents of unchanged GIFs, per model
LOCK_FILE = ".extract_latent_vectors.lock"

# --- clustering ----------------------------------------------------------------------
TSNE_EXACT_UP_TO = 5000  # larger sets get a coarser, faster t-SNE (angle 0.7)
N_CLUSTERS = 0  # k-means clusters; 0 picks 2..MAX_AUTO_CLUSTERS by silhouette score
MAX_AUTO_CLUSTERS = 12
NAME_COLUMNS = ("filename", "file", "gif", "path")  # accepted names of the name column
REPEATED_COLUMNS = {"f": "f", "f_value": "f", "k": "k", "k_value": "k"}

log = logging.getLogger("extract_latent_vectors")


class UserError(Exception):
    """A problem the user can fix; main() prints it without a traceback."""


class GifError(Exception):
    """A GIF that cannot be turned into a movie tensor; the message says why."""


# -----------------------------------------------------------------------------------
# loading: GIF files -> uint8 movies (gifs, frames, height, width)

F_K_PATTERN = re.compile(
    r"(?:^|[^a-z])f[=_]?(\d*\.\d+|\d+)[-_ ]+k[=_]?(\d*\.\d+|\d+)", re.IGNORECASE
)


def list_gifs(gif_dir):
    """Every *.gif in the folder, sorted by name."""
    return sorted(
        p for p in gif_dir.iterdir() if p.suffix.lower() == ".gif" and p.is_file()
    )


def parse_f_k(name):
    """Read (f, k) from a file name such as GrayScott-f0.0580-k0.0680-00.gif."""
    match = F_K_PATTERN.search(Path(name).stem)
    if match is None:
        return None, None
    return float(match.group(1)), float(match.group(2))


def parse_f_k_or_nan(name):
    """(f, k) from a file name, NaN where the name holds none."""
    f, k = parse_f_k(name)
    return (np.nan, np.nan) if f is None else (f, k)


def frame_indices(n_frames, max_frames):
    """max_frames indices evenly spread from the first frame to the last."""
    # a short movie repeats frames in time order rather than padding with blanks
    return np.linspace(0, n_frames - 1, max_frames).round().astype(int)


def check_gif_header(path):
    """Refuse what is not a GIF, or whose canvas is empty or absurdly large."""
    with open(path, "rb") as fh:
        header = fh.read(10)
    if len(header) == 0:
        raise GifError("the file is empty (0 bytes)")
    if header[:6] not in (b"GIF87a", b"GIF89a"):
        raise GifError(f"not a GIF file (it starts with {header[:6]!r})")
    if len(header) < 10:
        raise GifError("the file ends inside the GIF header")
    width, height = struct.unpack("<HH", header[6:10])
    if width == 0 or height == 0:
        raise GifError(f"the GIF canvas is {width}x{height} pixels")
    if width * height > MAX_CANVAS_PIXELS:
        raise GifError(
            f"the GIF canvas claims {width}x{height} pixels, over the limit of "
            f"{MAX_CANVAS_PIXELS:,} (a decompression bomb?); refused before decoding"
        )


def frame_to_grey(frame, frame_size):
    """One composited GIF frame as a frame_size x frame_size uint8 grey image."""
    if frame.width * frame.height > MAX_CANVAS_PIXELS:
        # a frame larger than the canvas grows it; Pillow allocates only on load
        raise GifError(
            f"a frame grows the canvas to {frame.width}x{frame.height} pixels, over "
            f"the limit of {MAX_CANVAS_PIXELS:,} (a decompression bomb?); refused "
            "before decoding"
        )
    if frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info:
        # what is still transparent shows the background, which is u = 1 (white)
        rgba = frame.convert("RGBA")
        frame = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        frame.alpha_composite(rgba)
    grey = frame.convert("L")
    if grey.size != (frame_size, frame_size):
        # BOX gives exact block means for whole-number reductions (128 -> 64) but
        # aliases at other ratios; Pillow widens BILINEAR to antialias any shrink
        whole = grey.width % frame_size == 0 and grey.height % frame_size == 0
        resample = Image.Resampling.BOX if whole else Image.Resampling.BILINEAR
        grey = grey.resize((frame_size, frame_size), resample)
    return np.asarray(grey, dtype=np.uint8)


class _PaletteKeepingGif(GifImagePlugin.GifImageFile):
    """Pillow's GIF reader, except that it keeps a global palette of plain greys."""

    # Pillow drops a palette that is the grey ramp 0..255 and then reads the local
    # palette of a later frame as grey levels (as Pillow itself writes a grey frame
    # followed by a coloured one); keeping the palette costs no measurable time
    def _is_palette_needed(self, p):
        return True


def read_movie(path, max_frames=MAX_FRAMES, frame_size=FRAME_SIZE):
    """Decode one GIF into (max_frames, frame_size, frame_size) uint8, plus a note.

    Raises GifError, and nothing else, for a file that cannot be used. The note is
    None, or says what was recovered from a damaged file.
    """
    check_gif_header(path)
    # frames that share one palette stay palette images, which turn into grey far
    # faster than the RGB copy of every frame that Pillow makes by default
    GifImagePlugin.LOADING_STRATEGY = (
        GifImagePlugin.LoadingStrategy.RGB_AFTER_DIFFERENT_PALETTE_ONLY)
    try:
        with _PaletteKeepingGif(path) as gif:
            if gif.format != "GIF":
                raise GifError(f"Pillow reads it as {gif.format}, not GIF")
            movie, note = _read_frames(gif, max_frames, frame_size)
            if note is None and not _ends_with_trailer(path):
                # cut between frames: what is left decodes cleanly, but is short
                note = (f"the file ends without the GIF trailer, so it may be cut "
                        f"short; using the {gif.n_frames} frames it holds")
            return movie, note
    except GifError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise GifError(f"cannot decode it ({type(exc).__name__}: {exc})") from exc


def _ends_with_trailer(path):
    """Whether the file ends with the GIF trailer byte, as a complete GIF does."""
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b";"


# what Pillow raises on a damaged or cut-off frame, depending on where it breaks
_FRAME_ERRORS = (OSError, EOFError, SyntaxError, IndexError, KeyError, ValueError,
                 struct.error)


def _read_frames(gif, max_frames, frame_size):
    """Pick evenly spread frames; fall back to the readable ones of a cut-off file."""
    try:
        n_frames = gif.n_frames
    except Exception:  # noqa: BLE001 -- counting breaks on a file cut short
        n_frames = None
    if n_frames:
        wanted = frame_indices(n_frames, max_frames)
        picked = {}
        try:
            for index, frame in enumerate(ImageSequence.Iterator(gif)):
                if index in wanted:
                    picked[index] = frame_to_grey(frame, frame_size)
                if index >= wanted[-1]:
                    break
            return np.stack([picked[i] for i in wanted]), None
        except _FRAME_ERRORS:
            pass  # damaged frame: read again, keeping what comes before it
    frames = []
    with contextlib.suppress(*_FRAME_ERRORS):
        for frame in ImageSequence.Iterator(gif):
            frames.append(frame_to_grey(frame, frame_size))
    if not frames:
        raise GifError("no frame could be decoded")
    picked = np.stack([frames[i] for i in frame_indices(len(frames), max_frames)])
    note = f"the file is damaged after frame {len(frames)}; using frames 1-{len(frames)}"
    return picked, note


def _decode_task(task):
    """Worker body: (index, path, frames, size) -> (index, movie or None, note)."""
    index, path, max_frames, frame_size = task
    try:
        movie, note = read_movie(path, max_frames, frame_size)
        return index, movie, note
    except GifError as exc:
        return index, None, str(exc)
    except OSError as exc:
        return index, None, f"cannot read it ({exc.strerror or exc})"


def _ignore_sigint():
    """Let the main process alone handle Ctrl-C; SIGTERM simply ends a worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # inherited from main(), its handler would print a traceback per worker
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def decode_workers():
    """How many processes decode GIFs: one per core this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _decode_worker(tasks, connection):
    """Worker process: decode its share of the GIFs, sending back each result."""
    _ignore_sigint()
    with connection:
        for task in tasks:
            connection.send(_decode_task(task))


def _decode_in_workers(tasks, workers):
    """Yield _decode_task results from worker processes, in the order they finish.

    Each worker has a pipe of its own, so a worker that dies (a signal, the
    out-of-memory killer) can block no other; its GIFs are decoded here instead.
    """
    # multiprocessing.Pool deadlocks when a worker dies holding its shared queue
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    running, done = {}, set()
    try:
        for share in (tasks[w::workers] for w in range(workers)):
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(target=_decode_worker, args=(share, writer),
                                      daemon=True)
            process.start()
            writer.close()
            running[reader] = process
        while running:
            for reader in multiprocessing.connection.wait(list(running)):
                try:
                    result = reader.recv()
                except (EOFError, OSError):  # the worker has finished, or died
                    running.pop(reader).join()
                    reader.close()
                    continue
                done.add(result[0])
                yield result
    finally:
        for process in running.values():  # only after an interrupt or an error
            process.kill()
            process.join()
    lost = [task for task in tasks if task[0] not in done]
    if lost:
        log.warning("warning: a decoding process ended early; decoding its %d "
                    "remaining GIFs in the main process", len(lost))
        yield from map(_decode_task, lost)


def decode_movies(paths, max_frames, frame_size, workers=1, progress=True):
    """Decode GIFs on `workers` cores into one uint8 array; unreadable ones skipped.

    Returns (movies, kept) where kept lists the paths of the rows of movies, in
    the order of paths whatever order the workers finish in.
    """
    movies = np.empty((len(paths), max_frames, frame_size, frame_size), np.uint8)
    tasks = [(i, p, max_frames, frame_size) for i, p in enumerate(paths)]
    workers = min(workers, len(tasks))
    results = (_decode_in_workers(tasks, workers) if workers > 1
               else map(_decode_task, tasks))
    readable = np.zeros(len(paths), bool)
    bar = tqdm(results, total=len(tasks), desc="decoding GIFs", unit="gif",
               disable=not progress or None, leave=False)
    with contextlib.closing(bar):  # stops the workers if this loop is interrupted
        for index, movie, note in bar:
            if movie is None:
                log.warning("warning: skipping %s: %s", paths[index], note)
                continue
            if note:
                log.warning("warning: %s: %s", paths[index], note)
            movies[index] = movie  # (frames, height, width)
            readable[index] = True
    kept = np.flatnonzero(readable)
    for row, index in enumerate(kept):  # close the gaps in place: no second copy
        movies[row] = movies[index]
    return movies[: len(kept)], [paths[i] for i in kept]


# -----------------------------------------------------------------------------------
# model: a Conv3d autoencoder whose convolutions wrap around the periodic grid


class PeriodicConv3d(nn.Conv3d):
    """Conv3d padded circularly in space (the grid is periodic) and with zeros in time."""

    def __init__(self, in_channels, out_channels, kernel, stride):
        super().__init__(in_channels, out_channels, kernel, stride)
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.stride
        self.space_pad = ((kw - sw + 1) // 2, (kw - sw) // 2,
                          (kh - sh + 1) // 2, (kh - sh) // 2, 0, 0)
        self.time_pad = (0, 0, 0, 0, (kt - st + 1) // 2, (kt - st) // 2)

    def forward(self, x):
        x = F.pad(x, self.space_pad, mode="circular")
        return super().forward(F.pad(x, self.time_pad))


class MovieAutoencoder(nn.Module):
    """Movie (batch, 1, frames, size, size) -> latent (batch, latent_dim) -> movie.

    The latent is read from spatial statistics (mean and spread over the grid, per
    time step) of every encoder layer, so it describes what the pattern is and how it
    changes at three scales, nearly regardless of where on the periodic grid it sits.
    """

    def __init__(self, latent_dim=LATENT_DIM, max_frames=MAX_FRAMES,
                 frame_size=FRAME_SIZE, width=WIDTH):
        super().__init__()
        self.code_shape = (4 * width, max_frames // 8, frame_size // 16, frame_size // 16)
        self.encoder = nn.ModuleList([
            PeriodicConv3d(1, width, (2, 4, 4), (2, 4, 4)),  # patches of 2x4x4 pixels
            PeriodicConv3d(width, 2 * width, 3, 2),
            PeriodicConv3d(2 * width, 4 * width, 3, 2),
        ])
        # each layer has width * max_frames / 2 (channel, time step) pairs, and each
        # pair gives a mean and a spread over the grid
        n_statistics = 3 * (width * max_frames // 2) * 2
        self.to_latent = nn.Linear(n_statistics, latent_dim)
        self.from_latent = nn.Linear(latent_dim, math.prod(self.code_shape))
        self.decoder = nn.Sequential(
            nn.GELU(),
            nn.ConvTranspose3d(4 * width, 2 * width, 4, 2, 1),
            nn.GELU(),
            nn.ConvTranspose3d(2 * width, width, 4, 2, 1),
            nn.GELU(),
            nn.ConvTranspose3d(width, 1, (2, 4, 4), (2, 4, 4)),
        )

    def encode(self, movies):
        """(batch, 1, frames, size, size) in [0, 1] -> (batch, latent_dim)."""
        statistics = []
        x = movies
        for layer in self.encoder:
            x = F.gelu(layer(x))  # (batch, channels, time, height, width)
            mean = x.mean((3, 4))  # (batch, channels, time)
            # eps keeps the gradient finite where a layer is flat (a uniform run)
            spread = (x.var((3, 4), correction=0) + 1e-6).sqrt()
            statistics += [mean.flatten(1), spread.flatten(1)]
        return self.to_latent(torch.cat(statistics, 1))

    def decode(self, latents):
        """(batch, latent_dim) -> reconstructed movies in [0, 1]."""
        code = self.from_latent(latents).view(-1, *self.code_shape)
        return torch.sigmoid(self.decoder(code))

    def forward(self, movies):
        return self.decode(self.encode(movies))


def model_settings(args):
    """The settings a trained model depends on; a mismatch makes it unusable."""
    return {
        "architecture": ARCHITECTURE,
        "latent_dim": args.latent_dim,
        "max_frames": args.max_frames,
        "frame_size": args.frame_size,
        "width": WIDTH,
    }


def build_model(settings):
    """Rebuild the network from the settings stored with it."""
    return MovieAutoencoder(settings["latent_dim"], settings["max_frames"],
                            settings["frame_size"], settings["width"])


# -----------------------------------------------------------------------------------
# training or loading the model


def seed_everything(seed):
    """Seed Python, NumPy and PyTorch so that a run can be repeated."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_batch(movies, device):
    """uint8 (batch, frames, h, w) -> float (batch, 1, frames, h, w) in [0, 1]."""
    movies = torch.as_tensor(movies).to(device, non_blocking=True)
    return movies.unsqueeze(1).float().div_(255.0)


def augment(batch, generator):
    """Shift, turn and flip a batch by a random symmetry of the periodic grid."""
    # a pattern means the same thing moved round the torus, turned or mirrored;
    # one draw of four numbers below 4 * size gives turns, flip and shift alike
    turns, flip, dy, dx = torch.randint(0, 4 * batch.shape[-1], (4,),
                                        generator=generator).tolist()
    batch = torch.roll(batch, (dy, dx), dims=(3, 4))
    batch = torch.rot90(batch, turns % 4, dims=(3, 4))
    return batch.flip(4) if flip % 2 else batch


def invariance_loss(latents, other):
    """VICReg: two views of a movie agree, while every latent dimension keeps
    spread and carries its own information (so the latents cannot collapse)."""
    agree = F.mse_loss(latents, other)
    spread = cov = 0.0
    for z in (latents, other):
        spread = spread + F.relu(1 - (z.var(0) + 1e-4).sqrt()).mean()
        z = z - z.mean(0)
        covariance = (z.T @ z) / (len(z) - 1)  # (latent_dim, latent_dim)
        off_diagonal = covariance - torch.diag(torch.diag(covariance))
        cov = cov + off_diagonal.pow(2).sum() / z.shape[1]
    return agree + spread + cov / VICREG_COV_WEIGHT


def training_loss(model, batch, generator, invariance=INVARIANCE):
    """(loss, reconstruction error) of one batch (batch, 1, frames, h, w)."""
    view = augment(batch, generator)
    latents = model.encode(view)
    reconstruction = F.mse_loss(model.decode(latents), view)
    if not invariance or len(batch) < 2:  # a single movie has no spread to keep
        return reconstruction, reconstruction
    other = model.encode(augment(batch, generator))
    return reconstruction + invariance * invariance_loss(latents, other), reconstruction


def train_model(movies, args, device):
    """Fit the autoencoder to the movies; returns (model, losses per epoch)."""
    model = build_model(model_settings(args)).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    generator = torch.Generator().manual_seed(args.seed)
    data = torch.from_numpy(movies)  # stays uint8 until a batch is made
    if device.type == "cuda":
        data = data.to(device)  # a few hundred MB at most; keeps the GPU fed
    history = {"loss": [], "reconstruction": []}  # mean per epoch
    log.info("training on %d GIFs for %d epochs on %s", len(data), args.epochs, device)
    for epoch in range(1, args.epochs + 1):
        start, total, rebuilt = time.perf_counter(), 0.0, 0.0
        order = torch.randperm(len(data), generator=generator)
        batches = order.split(args.batch_size)
        for batch_ids in tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=None):
            batch = to_batch(data[batch_ids], device)  # (batch, 1, frames, h, w)
            loss, reconstruction = training_loss(model, batch, generator,
                                                 args.invariance)
            if not torch.isfinite(loss):
                raise UserError(
                    f"the training loss became {loss.item()} in epoch {epoch}; "
                    "the model was not saved. Try a lower --learning-rate."
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch_ids)
            rebuilt += reconstruction.item() * len(batch_ids)
        history["loss"].append(total / len(data))
        history["reconstruction"].append(rebuilt / len(data))
        log.info("epoch %3d/%d  loss %.5f (reconstruction %.5f)  %.1f s", epoch,
                 args.epochs, history["loss"][-1], history["reconstruction"][-1],
                 time.perf_counter() - start)
    return model, history


def _umask():
    """The process umask (reading it means setting it, so set it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Write a file through a temporary one and a rename: old or new, never half."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                   dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write in {path.parent}: {exc.strerror}. "
                        "Make the folder writable, or copy the GIFs somewhere "
                        "you can write.") from exc
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs are not
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}. Free some "
                        "disk space or choose another folder; that file was left "
                        "as it was.") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def save_checkpoint(path, model, settings, history, args, n_gifs):
    """Save the weights with everything needed to rebuild and judge them.

    Returns the SHA-256 of the file written, which keys the latent cache.
    """
    checkpoint = {
        "settings": settings,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "loss_history": history["loss"],
        "reconstruction_history": history.get("reconstruction", []),
        "training": {"epochs": args.epochs, "batch_size": args.batch_size,
                     "learning_rate": args.learning_rate, "seed": args.seed,
                     "invariance": args.invariance,
                     "gifs": n_gifs},
    }
    # serialised in memory first: torch.save turns a failed write (a full disk)
    # into a RuntimeError, which atomic_write would not report as a write error
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write(path, lambda fh: fh.write(buffer.getbuffer()))
    return hashlib.sha256(buffer.getbuffer()).hexdigest()


def load_checkpoint(path, settings):
    """Load a saved model safely; refuse one trained with other settings."""
    try:
        # weights_only never runs code that a shared model file might carry
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        saved = checkpoint["settings"]
        state = checkpoint["model"]
    except Exception as exc:
        text = str(exc)
        detail = text.splitlines()[0] if text else "the file is empty or cut short"
        # torch's own advice (load with weights_only=False) is what must not happen
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            detail = (f"it holds a pickled Python object ({found.group(1)}) besides "
                      "weights, which could run code, so it was not loaded")
        elif "Weights only load failed" in text:
            detail = "the file is damaged, or is not a PyTorch model"
        raise UserError(
            f"{path} is not a model this tool can read ({type(exc).__name__}: "
            f"{detail}). Move it away, or pass --retrain to train a new one in its "
            "place."
        ) from exc
    differences = [
        f"{key}: model has {saved.get(key)!r}, this run asks for {value!r}"
        for key, value in settings.items() if saved.get(key) != value
    ]
    if differences:
        raise UserError(
            f"{path} was trained with other settings:\n  " + "\n  ".join(differences)
            + "\nPass --retrain to train a new model (it replaces this one), or rerun "
            "with the model's settings."
        )
    model = build_model(saved)
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise UserError(f"{path} does not fit the network ({exc}). Pass --retrain "
                        "to train a new one.") from exc
    return model, checkpoint


# -----------------------------------------------------------------------------------
# encoding: movies -> latent vectors


@torch.no_grad()
def encode_movies(model, movies, device):
    """Latent vectors (gifs, latent_dim) of uint8 movies, in fixed-size batches."""
    model.eval()
    if len(movies) == 0:  # a chunk of GIFs that were all unreadable
        return np.zeros((0, model.to_latent.out_features), np.float32)
    latents = []
    for start in range(0, len(movies), ENCODE_BATCH):
        batch = movies[start:start + ENCODE_BATCH]  # (batch, frames, h, w)
        # a short batch is padded to full size: PyTorch picks its convolution by
        # batch size, so a GIF encoded alone would differ in the last digits
        padded = np.zeros((ENCODE_BATCH, *batch.shape[1:]), np.uint8)
        padded[:len(batch)] = batch
        latents.append(model.encode(to_batch(padded, device))[:len(batch)].cpu())
    return torch.cat(latents).numpy().astype(np.float32)


def file_stamp(path):
    """What identifies an unchanged file: its name, size and modification time."""
    stat = path.stat()
    return f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}"


def load_cache(path, model_hash):
    """Cached latents by file stamp, if they were made by this very model."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache["model_hash"]) != model_hash:
                return {}
            return dict(zip(cache["stamps"].tolist(), cache["latents"]))
    except Exception:  # noqa: BLE001 -- a missing or broken cache only costs time
        return {}


def save_cache(path, model_hash, stamps, latents):
    """Remember the latents of these files for this model."""
    def write(fh):
        np.savez(fh, model_hash=np.array(model_hash), stamps=np.array(stamps),
                 latents=latents)
    atomic_write(path, write)


def encode_gif_files(model, paths, args, device, workers, cache, clock):
    """Latents of GIF files, decoded chunk by chunk so memory stays bounded."""
    kept, latents, missing = [], [], []
    for path in paths:
        stamp = file_stamp(path)
        if stamp in cache:
            kept.append(path)
            latents.append(cache[stamp])
        else:
            missing.append(path)
    if missing:
        log.info("encoding %d GIFs not seen by this model before (%d from cache)",
                 len(missing), len(kept))
    for start in range(0, len(missing), DECODE_CHUNK):
        with clock("decode"):
            movies, done = decode_movies(missing[start:start + DECODE_CHUNK],
                                         args.max_frames, args.frame_size, workers)
        with clock("encode"):
            latents.extend(encode_movies(model, movies, device))
        kept.extend(done)
    order = np.argsort([p.name for p in kept], kind="stable")
    return [kept[i] for i in order], np.array(latents, np.float32)[order]


# -----------------------------------------------------------------------------------
# maps and clusters of the latent space


def standardise(latents):
    """Each latent dimension scaled to zero mean and unit variance."""
    spread = latents.std(axis=0)
    return (latents - latents.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


def run_tsne(latents, seed):
    """Two t-SNE coordinates per GIF, with a perplexity that suits small sets."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(latents) - 1) / 3)))
    # a coarser Barnes-Hut angle keeps 15,600 GIFs near 45 s instead of 65 s; the
    # map of a smaller set is computed exactly as before
    angle = 0.5 if len(latents) <= TSNE_EXACT_UP_TO else 0.7
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", angle=angle,
                learning_rate="auto", random_state=seed)
    return tsne.fit_transform(standardise(latents)).astype(np.float32)


def cluster_latents(latents, n_clusters, seed):
    """k-means labels; n_clusters 0 chooses the count by silhouette score."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    features = standardise(latents)
    n_distinct = len(np.unique(features, axis=0))
    if n_distinct < 2:
        return np.zeros(len(latents), int)
    if n_clusters:
        n_clusters = min(n_clusters, n_distinct)
        return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(features)
    best, best_score = None, -2.0
    for count in range(2, min(MAX_AUTO_CLUSTERS, n_distinct - 1) + 1):
        labels = KMeans(count, n_init=10, random_state=seed).fit_predict(features)
        score = silhouette_score(features, labels, sample_size=min(len(features), 3000),
                                 random_state=seed)
        if score > best_score:
            best, best_score = labels, score
    if best is None:  # two or three distinct points: one cluster each
        best = KMeans(n_distinct, n_init=10, random_state=seed).fit_predict(features)
    return best


def _figure():
    """A fresh matplotlib figure on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path):
    """Write a figure atomically as PNG."""
    plt = _figure()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)


def plot_tsne(coords, values, label, n_gifs, path):
    """Scatter the t-SNE map coloured by one parameter (f or k)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 6))
    known = np.isfinite(values)
    if (~known).any():
        ax.scatter(*coords[~known].T, c="lightgrey", s=12, label=f"{label} unknown")
        ax.legend(loc="best")
    points = ax.scatter(*coords[known].T, c=values[known], cmap="viridis", s=12)
    if known.any():
        fig.colorbar(points, ax=ax, label=label)
    ax.set(xlabel="t-SNE 1", ylabel="t-SNE 2",
           title=f"Latent space of {n_gifs:,} GIFs (t-SNE), coloured by {label}")
    save_figure(fig, path)


def plot_clusters_fk(f, k, clusters, path):
    """The clusters on the (f, k) plane: a phase diagram drawn from the pixels."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 6))
    labels = np.unique(clusters)
    colours = plt.get_cmap("tab20", max(len(labels), 1))
    for i, label in enumerate(labels):
        chosen = clusters == label
        ax.scatter(k[chosen], f[chosen], color=colours(i), s=28, label=str(label))
    ax.legend(title="cluster", fontsize="small", loc="best")
    ax.set(xlabel="kill rate k", ylabel="feed rate f",
           title=f"Latent clusters of {len(f):,} GIFs on the (f, k) plane")
    save_figure(fig, path)


@torch.no_grad()
def plot_reconstructions(model, movies, names, device, path, n_frames=6):
    """A few movies' frames (top) over their reconstructions (bottom)."""
    model.eval()
    rebuilt = model(to_batch(movies, device)).cpu().numpy()[:, 0]  # (gifs, t, h, w)
    times = frame_indices(movies.shape[1], n_frames)
    plt = _figure()
    fig, axes = plt.subplots(2 * len(movies), n_frames, squeeze=False,
                             figsize=(1.6 * n_frames, 3.4 * len(movies)))
    for row, (movie, guess, name) in enumerate(zip(movies, rebuilt, names)):
        for col, t in enumerate(times):
            axes[2 * row, col].imshow(movie[t], cmap="gray", vmin=0, vmax=255)
            axes[2 * row + 1, col].imshow(guess[t], cmap="gray", vmin=0, vmax=1)
            axes[2 * row + 1, col].set_xlabel(f"frame {t + 1}", fontsize=7)
        axes[2 * row, 0].set_ylabel("GIF", fontsize=8)
        axes[2 * row + 1, 0].set_ylabel("rebuilt", fontsize=8)
        axes[2 * row, 0].set_title(name, fontsize=8, loc="left")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)


def plot_loss(history, path):
    """The training loss per epoch, and the reconstruction error within it."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = range(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], marker="o",
            label="loss (reconstruction + invariance)")
    if history.get("reconstruction"):
        ax.plot(epochs, history["reconstruction"], marker="s",
                label="reconstruction (mean squared error)")
    ax.set(xlabel="epoch", ylabel="loss per movie", yscale="log",
           title="Autoencoder training")
    ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
    ax.legend(loc="best")
    fig.tight_layout()
    save_figure(fig, path)


# -----------------------------------------------------------------------------------
# CSV files: the latent table, and its merge with the users' clustering


def format_value(value):
    """Floats with enough digits to round-trip float32; empty for unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.9g}"
    return str(value)


def write_csv(path, header, rows):
    """Write a CSV file atomically."""
    def write(fh):
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows([format_value(v) for v in row] for row in rows)
        text.flush()
        text.detach()
    atomic_write(path, write)


def latent_table(names, f, k, latents):
    """Header and rows of filename, f, k, z0..zN (NaN f and k give empty cells)."""
    header = ["filename", "f", "k"] + [f"z{i}" for i in range(latents.shape[1])]
    rows = [[name, fv, kv, *vector]
            for name, fv, kv, vector in zip(names, f, k, latents)]
    return header, rows


def gif_key(value):
    """The GIF file name a clustering cell refers to (full paths allowed)."""
    name = re.split(r"[\\/]", value.strip())[-1]
    return name if name.lower().endswith(".gif") else name + ".gif"


def read_clusters(path):
    """The users' clustering table as (header, rows); never modifies the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("warning: cannot read the clustering file %s (%s); "
                    "using k-means clusters instead", path, exc)
        return None
    table = [row for row in table if any(cell.strip() for cell in row)]
    if not table:
        log.warning("warning: the clustering file %s is empty; using k-means "
                    "clusters instead", path)
        return None
    return table[0], table[1:]


def merge_clusters(names, f, k, path):
    """Align the users' clustering rows to our GIFs by file name.

    Returns (extra header, one list of cells per GIF) or None when the file cannot
    be aligned. Rows are matched by name only, never by position.
    """
    table = read_clusters(path)
    if table is None:
        return None
    header, rows = table
    lowered = [h.strip().lower() for h in header]
    name_col = next((lowered.index(c) for c in NAME_COLUMNS if c in lowered), None)
    if name_col is None:
        log.warning(
            "warning: the clustering file %s has no file-name column (looked for %s; "
            "found %s), so its rows cannot be matched to GIFs; using k-means "
            "clusters instead", path, ", ".join(NAME_COLUMNS), ", ".join(header))
        return None
    repeated = {i: REPEATED_COLUMNS[h] for i, h in enumerate(lowered)
                if h in REPEATED_COLUMNS}
    keep = [i for i in range(len(header)) if i != name_col and i not in repeated]
    by_name, duplicates = {}, []
    for row in rows:
        row = row + [""] * (len(header) - len(row))
        key = gif_key(row[name_col])
        if key in by_name:
            duplicates.append(key)
            continue
        by_name[key] = row
    ours = {"f": dict(zip(names, f)), "k": dict(zip(names, k))}
    disagree = set()
    for key, row in by_name.items():
        for i, which in repeated.items():
            mine = ours[which].get(key)
            with contextlib.suppress(ValueError, TypeError):
                if mine is not None and abs(float(row[i]) - mine) > 1e-6:
                    disagree.add(key)
    merged = [[by_name[n][i] for i in keep] if n in by_name else [""] * len(keep)
              for n in names]
    unmatched = sorted(set(by_name) - set(names))
    uncovered = [n for n in names if n not in by_name]
    if unmatched or uncovered or duplicates or disagree:
        log.warning(
            "warning: clustering file %s: %d rows match no GIF (e.g. %s); %d GIFs have "
            "no clustering row (e.g. %s) and get empty cluster cells; %d duplicate "
            "names kept once (e.g. %s); %d rows whose f/k differ from the file name "
            "(e.g. %s)", path, len(unmatched), ", ".join(unmatched[:3]) or "-",
            len(uncovered), ", ".join(uncovered[:3]) or "-", len(duplicates),
            ", ".join(duplicates[:3]) or "-", len(disagree),
            ", ".join(sorted(disagree)[:3]) or "-")
    return [header[i] for i in keep], merged


# -----------------------------------------------------------------------------------
# the run


def parse_args(argv):
    """Command-line flags; each overrides one constant for this run."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--gif-dir", type=Path, default=Path(GIF_DIR),
        help="folder of GIFs; outputs are written here too (relative to the cwd)")
    add("--latent-dim", type=int, default=LATENT_DIM, help="length of each latent vector")
    add("--batch-size", type=int, default=BATCH_SIZE, help="movies per training step")
    add("--epochs", type=int, default=EPOCHS, help="training passes over all GIFs")
    add("--learning-rate", type=float, default=LEARNING_RATE, help="AdamW step size")
    add("--invariance", type=float, default=INVARIANCE,
        help="weight of the term that makes shifted, turned or mirrored copies of a "
             "movie share one latent vector (0: a plain autoencoder)")
    add("--max-frames", type=int, default=MAX_FRAMES,
        help="frames per movie, evenly spread from first to last (multiple of 8)")
    add("--frame-size", type=int, default=FRAME_SIZE,
        help="frames are resized to this many pixels square (multiple of 16)")
    add("--seed", type=int, default=SEED, help="random seed for training, t-SNE, k-means")
    add("--n-clusters", type=int, default=N_CLUSTERS,
        help=f"k-means clusters; 0 picks 2-{MAX_AUTO_CLUSTERS} by silhouette score")
    add("--clusters-csv", type=Path, default=None,
        help=f"your clustering file to merge (default: {CLUSTERS_CSV} in the GIF "
             "folder, if present)")
    add("--retrain", action="store_true",
        help="train a new model even if one exists (it replaces the old one)")
    add("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
        help="where to train and encode; auto picks a GPU when there is one")
    return parser.parse_args(argv)


def check_settings(args):
    """Refuse settings the model cannot work with, saying what would work."""
    problems = []
    if args.max_frames < 8 or args.max_frames % 8:
        problems.append(f"--max-frames {args.max_frames}: use a multiple of 8, e.g. 32")
    if args.frame_size < 16 or args.frame_size % 16:
        problems.append(f"--frame-size {args.frame_size}: use a multiple of 16, e.g. 64")
    for flag in ("latent_dim", "batch_size", "epochs"):
        if getattr(args, flag) < 1:
            problems.append(f"--{flag.replace('_', '-')} must be at least 1")
    if args.n_clusters < 0:
        problems.append("--n-clusters must be 0 (automatic) or more")
    if not args.learning_rate > 0:
        problems.append("--learning-rate must be positive")
    if not args.invariance >= 0:
        problems.append("--invariance must be 0 or more")
    if problems:
        raise UserError("bad settings:\n  " + "\n  ".join(problems))


def pick_device(choice):
    """The torch device for --device, or a clear refusal."""
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch finds no CUDA GPU here; "
                        "use --device cpu or auto")
    if choice == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: no Apple GPU here; use --device cpu or auto")
    return torch.device(choice)


@contextlib.contextmanager
def folder_lock(gif_dir):
    """Hold a lock on the GIF folder so two runs cannot mix their outputs."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = gif_dir / LOCK_FILE
    try:
        handle = open(path, "a+")  # noqa: SIM115 -- held open until the run ends
    except OSError as exc:
        raise UserError(f"cannot write in {gif_dir}: {exc.strerror}. Make the folder "
                        "writable, or copy the GIFs somewhere you can write.") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise UserError(f"another run is working in {gif_dir}; wait for it to "
                            "finish, then run again.") from exc
        yield


def find_gifs(gif_dir):
    """The GIFs to work on, or a refusal that says how to point at them."""
    if not gif_dir.is_dir():
        raise UserError(f"the GIF folder {gif_dir} does not exist; pass --gif-dir "
                        "with the folder that holds your GIFs")
    paths = list_gifs(gif_dir)
    if not paths:
        raise UserError(f"no .gif files in {gif_dir}; pass --gif-dir with the folder "
                        "that holds your GIFs")
    return paths


@dataclasses.dataclass
class Encoded:
    """What the steps after encoding need: the model and every readable GIF's latent."""

    model: MovieAutoencoder
    kept: list  # paths of the readable GIFs, sorted by name
    latents: np.ndarray  # (gifs, latent_dim) float32
    history: dict | None  # loss and reconstruction error per epoch, if known
    movies: np.ndarray | None = None  # decoded movies, when this run trained
    written: list = dataclasses.field(default_factory=list)


class StageClock:
    """Wall time spent in each step, for the closing summary."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, step):
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[step] = self.seconds.get(step, 0.0) + elapsed

    def summary(self):
        """One line: seconds per step and the peak memory of this process."""
        steps = ", ".join(f"{step} {sec:.1f} s" for step, sec in self.seconds.items())
        return f"time per step: {steps} | peak memory {peak_memory_mb():.0f} MB"


def peak_memory_mb():
    """Peak resident memory of this process so far, in MB (NaN where unknown)."""
    if resource is None:  # pragma: no cover
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def none_readable(args, paths):
    """The error for a folder in which no GIF could be read."""
    return UserError(f"none of the {len(paths)} GIFs in {args.gif_dir} could be read "
                     "(see the warnings above)")


def train_or_load(args, paths, device, workers, clock):
    """Load the saved model and encode new GIFs, or decode all, train and encode."""
    settings = model_settings(args)
    model_path = args.gif_dir / MODEL_FILE
    if model_path.exists() and not args.retrain:
        model, checkpoint = load_checkpoint(model_path, settings)
        model.to(device)
        log.info("using the trained model %s (pass --retrain to train anew)",
                 model_path)
        model_hash = hashlib.sha256(model_path.read_bytes()).hexdigest()
        cache = load_cache(args.gif_dir / CACHE_FILE, model_hash)
        kept, latents = encode_gif_files(model, paths, args, device, workers, cache,
                                         clock)
        if not kept:
            raise none_readable(args, paths)
        history = {"loss": checkpoint.get("loss_history") or [],
                   "reconstruction": checkpoint.get("reconstruction_history") or []}
        result = Encoded(model, kept, latents, history)
    else:
        with clock("decode"):
            movies, kept = decode_movies(paths, args.max_frames, args.frame_size, workers)
        log.info("decoded %d GIFs in %.1f s", len(kept), clock.seconds["decode"])
        if not kept:
            raise none_readable(args, paths)
        with clock("train"):
            model, history = train_model(movies, args, device)
        with clock("encode"):
            latents = encode_movies(model, movies, device)
        # the last step can break the weights after the last loss was measured
        if not np.isfinite(latents).all():
            raise UserError("training made the model's latent vectors NaN or "
                            "infinite; the model was not saved. Try a lower "
                            "--learning-rate.")
        with clock("writing"):
            model_hash = save_checkpoint(model_path, model, settings, history, args,
                                         len(kept))
        result = Encoded(model, kept, latents, history, movies, [model_path])
    with clock("writing"):
        save_cache(args.gif_dir / CACHE_FILE, model_hash,
                   [file_stamp(p) for p in result.kept], result.latents)
    return result


def map_and_cluster(args, encoded, f, k, clock):
    """t-SNE maps and k-means clusters; returns (coords, clusters, files written)."""
    gif_dir, n_gifs, written = args.gif_dir, len(encoded.kept), []
    if n_gifs < 2:
        log.warning("warning: only one readable GIF; t-SNE maps and clusters need "
                    "at least two, so they are skipped")
        return np.full((n_gifs, 2), np.nan, np.float32), np.zeros(n_gifs, int), []
    with clock("t-SNE"):
        coords = run_tsne(encoded.latents, args.seed)
    with clock("clusters"):
        clusters = cluster_latents(encoded.latents, args.n_clusters, args.seed)
    with clock("writing"):
        for values, label, png in ((f, "feed rate f", TSNE_F_PNG),
                                   (k, "kill rate k", TSNE_K_PNG)):
            plot_tsne(coords, values, label, n_gifs, gif_dir / png)
            written.append(gif_dir / png)
        known = np.isfinite(f) & np.isfinite(k)
        if known.any():
            plot_clusters_fk(f[known], k[known], clusters[known],
                             gif_dir / CLUSTERS_FK_PNG)
            written.append(gif_dir / CLUSTERS_FK_PNG)
    return coords, clusters, written


def write_tables(args, encoded, f, k, coords, clusters, clusters_path):
    """The latent CSV and the combined CSV (merged with the users' clustering)."""
    names = [p.name for p in encoded.kept]
    header, rows = latent_table(names, f, k, encoded.latents)
    write_csv(args.gif_dir / LATENT_CSV, header, rows)
    extra_header, extra = ["cluster"], [[c] for c in clusters]
    if clusters_path.is_file():
        merged = merge_clusters(names, f, k, clusters_path)
        if merged is not None:
            log.info("merged your clustering file %s by file name", clusters_path)
            extra_header = merged[0] + ["latent_cluster"]
            extra = [row + [c] for row, c in zip(merged[1], clusters)]
    write_csv(args.gif_dir / COMBINED_CSV, header + ["tsne_x", "tsne_y"] + extra_header,
              [row + list(xy) + more for row, xy, more in zip(rows, coords, extra)])
    return [args.gif_dir / LATENT_CSV, args.gif_dir / COMBINED_CSV]


def plot_model(args, encoded, device):
    """Reconstructions of a few GIFs and the loss curve; returns the files written."""
    kept, written = encoded.kept, []
    picks = sorted(set(frame_indices(len(kept), min(4, len(kept))).tolist()))
    shown = [kept[i] for i in picks]
    if encoded.movies is None:  # only encoded this time: decode the few GIFs shown
        movies, shown = decode_movies(shown, args.max_frames, args.frame_size,
                                      progress=False)
    else:
        movies = encoded.movies[picks]
    plot_reconstructions(encoded.model, movies, [p.name for p in shown], device,
                         args.gif_dir / RECONSTRUCTIONS_PNG)
    written.append(args.gif_dir / RECONSTRUCTIONS_PNG)
    if encoded.history and encoded.history["loss"]:
        plot_loss(encoded.history, args.gif_dir / LOSS_PNG)
        written.append(args.gif_dir / LOSS_PNG)
    return written


def run(args):
    """The whole pipeline: GIFs -> model -> latents -> maps, clusters and CSVs."""
    check_settings(args)
    paths = find_gifs(args.gif_dir)
    device = pick_device(args.device)
    clusters_path = args.clusters_csv or args.gif_dir / CLUSTERS_CSV
    if args.clusters_csv and not args.clusters_csv.is_file():
        raise UserError(f"the clustering file {args.clusters_csv} does not exist")
    log.info("%d GIFs in %s | latent %d, %d frames of %dx%d px | device %s",
             len(paths), args.gif_dir, args.latent_dim, args.max_frames,
             args.frame_size, args.frame_size, device)
    seed_everything(args.seed)
    clock = StageClock()
    with folder_lock(args.gif_dir):
        encoded = train_or_load(args, paths, device, decode_workers(), clock)
        names = [p.name for p in encoded.kept]
        f, k = (np.array(v, float) for v in zip(*map(parse_f_k_or_nan, names)))
        unnamed = [n for n, fv in zip(names, f) if np.isnan(fv)]
        if unnamed:
            log.warning("warning: %d file names hold no f and k (e.g. %s); their f "
                        "and k cells are left empty", len(unnamed),
                        ", ".join(unnamed[:3]))
        coords, clusters, maps = map_and_cluster(args, encoded, f, k, clock)
        with clock("writing"):
            tables = write_tables(args, encoded, f, k, coords, clusters,
                                  clusters_path)
            pictures = plot_model(args, encoded, device)
    log.info(clock.summary())
    log.info("wrote %s", ", ".join(str(p) for p in
                                   encoded.written + tables + maps + pictures))


def _interrupt(signum, frame):
    """Turn SIGTERM into the same clean stop as Ctrl-C."""
    raise KeyboardInterrupt


def main(argv=None):
    """Run the tool; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        run(args)
    except UserError as exc:
        log.error("error: %s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted: every output is either its old or its new version; "
                  "run again to finish")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
