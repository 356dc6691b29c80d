"""A tiny class-conditional denoiser trained in about a second on two classes of 1 x 4 x 4 images, shared by the
guidance and editing tests (a real trained network, small enough for a 2-core CPU)."""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from diffkit.guidance import drop_labels
from diffkit.loss import diffusion_loss
from diffkit.nn.layers import timestep_embedding
from diffkit.schedule import linear
from tiny_run import one_thread

CLASS_MEANS = (-0.3, 0.3)  # class 0 is dark, class 1 bright; pixels scatter with std PIXEL_STD around the mean
PIXEL_STD = 0.5
SHAPE = (1, 4, 4)
NULL_LABEL = 2


class TinyDenoiser(nn.Module):
    """An MLP eps-denoiser (x_t, t, y) -> eps for 1 x 4 x 4 images, labels 0, 1 and the null label 2 (or -1/None)."""

    def __init__(self, width: int = 128, embedding: int = 32):
        super().__init__()
        self.embedding = embedding
        self.labels = nn.Embedding(NULL_LABEL + 1, embedding)
        pixels = SHAPE[0] * SHAPE[1] * SHAPE[2]
        self.net = nn.Sequential(nn.Linear(pixels + embedding, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, pixels))

    def forward(self, x_t, t, y=None):
        if y is None:
            y = torch.full((x_t.shape[0],), NULL_LABEL, dtype=torch.long)
        y = torch.where(y < 0, torch.full_like(y, NULL_LABEL), y)
        condition = timestep_embedding(torch.as_tensor(t).expand(x_t.shape[0]), self.embedding) + self.labels(y)
        return self.net(torch.cat([x_t.flatten(1), condition], dim=1)).view_as(x_t)


def draw_data(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (count, 1, 4, 4), labels (count,)) of the two classes."""
    labels = torch.randint(0, 2, (count,), generator=generator)
    means = torch.tensor(CLASS_MEANS)[labels].view(-1, 1, 1, 1)
    return means + PIXEL_STD * torch.randn(count, *SHAPE, generator=generator), labels


def classify(images: torch.Tensor) -> torch.Tensor:
    """The class whose mean is nearer each image's mean pixel (the Bayes classifier for these two classes)."""
    return (images.flatten(1).mean(1) > 0).long()


@functools.lru_cache(maxsize=1)
def trained_tiny_model(steps: int = 300, p_uncond: float = 0.2) -> tuple[TinyDenoiser, object]:
    """(model, schedule) after `steps` Adam steps on batches of 256 with labels dropped with p_uncond."""
    with contextlib.contextmanager(one_thread)():  # tiny matrices: one thread is ~8x faster than two here
        return _train(steps, p_uncond)


def _train(steps: int, p_uncond: float) -> tuple[TinyDenoiser, object]:
    """The training loop of `trained_tiny_model`."""
    torch.manual_seed(0)
    schedule = linear(1000)
    model = TinyDenoiser()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x0, labels = draw_data(256, generator)
        labels = drop_labels(labels, p_uncond, NULL_LABEL, generator)
        loss = diffusion_loss(model, schedule, x0, labels, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, schedule
