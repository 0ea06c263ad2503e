"""The users' earlier tooling, reproduced so that the benchmarks can compare with it.

What it did, as the users describe it: every movie decoded in one process and held as
float32, only its first MAX_FRAMES frames kept (the transient from the seed square),
and a plain Conv3d autoencoder of the common textbook kind (3x3x3 convolutions with
zero padding at full resolution, each followed by 2x max pooling; transposed
convolutions back up) trained without augmentation. The encoder has the same width as
ours (16, 32, 64 channels) and the same latent size. Only the benchmarks use this.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageSequence
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import extract_latent_vectors as tool


def load_first_frames(paths, max_frames=tool.MAX_FRAMES, frame_size=tool.FRAME_SIZE):
    """Every movie in one process as float32 (gifs, frames, h, w): the first frames."""
    movies = []
    for path in paths:
        with Image.open(path) as gif:
            frames = []
            for frame in ImageSequence.Iterator(gif):
                grey = frame.convert("L").resize((frame_size, frame_size))
                frames.append(np.asarray(grey, np.float32) / 255.0)
                if len(frames) == max_frames:
                    break
        while len(frames) < max_frames:  # short movies were padded with zeros
            frames.append(np.zeros((frame_size, frame_size), np.float32))
        movies.append(np.stack(frames))
    return np.stack(movies)


class EarlierAutoencoder(nn.Module):
    """Conv3d + max pooling down to the latent, transposed convolutions back up."""

    def __init__(self, latent_dim=tool.LATENT_DIM, max_frames=tool.MAX_FRAMES,
                 frame_size=tool.FRAME_SIZE, width=tool.WIDTH):
        super().__init__()
        self.code_shape = (4 * width, max_frames // 8, frame_size // 8, frame_size // 8)
        self.encoder = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(2 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
        )
        size = int(np.prod(self.code_shape))
        self.to_latent = nn.Linear(size, latent_dim)
        self.from_latent = nn.Linear(latent_dim, size)
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose3d(4 * width, 2 * width, 2, 2), nn.ReLU(),
            nn.ConvTranspose3d(2 * width, width, 2, 2), nn.ReLU(),
            nn.ConvTranspose3d(width, 1, 2, 2), nn.Sigmoid(),
        )

    def encode(self, movies):
        return self.to_latent(self.encoder(movies).flatten(1))

    def forward(self, movies):
        code = self.from_latent(self.encode(movies)).view(-1, *self.code_shape)
        return self.decoder(code)


def train_epochs(movies, epochs, seed=0, batch_size=tool.BATCH_SIZE):
    """Train the earlier model on float32 movies (gifs, frames, h, w); no augmentation."""
    torch.manual_seed(seed)
    model = EarlierAutoencoder()
    optimiser = torch.optim.Adam(model.parameters(), lr=tool.LEARNING_RATE)
    data = torch.from_numpy(movies).unsqueeze(1)  # (gifs, 1, frames, h, w)
    for _ in range(epochs):
        for ids in torch.randperm(len(data)).split(batch_size):
            loss = F.mse_loss(model(data[ids]), data[ids])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model


@torch.no_grad()
def encode(model, movies):
    """Latent vectors of float32 movies."""
    model.eval()
    data = torch.from_numpy(movies).unsqueeze(1)
    return torch.cat([model.encode(data[i:i + 64]) for i in range(0, len(data), 64)]
                     ).numpy()
