"""Inpainting through an encoder: the pixel mask moved to the latent grid for diffusion, the known pixels put back
after decoding (DESIGN.md, "Latent diffusion").

Diffusion in latent space cannot keep pixels exact: a latent cell stands for an f x f patch, and the decoder
mixes neighbouring cells. So the latent run treats a cell as known only when every pixel of its patch (in every
channel) is known, and the decoded image takes the known pixels from the input, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit.edit import _as_batch, inpaint, known_mask
from diffkit.encoders import Encoder
from diffkit.process import Denoiser
from diffkit.schedule import Schedule


def latent_mask(known: Tensor, factor: int) -> Tensor:
    """A bool mask (B|1, C|1, H, W) of known pixels -> (B|1, 1, H/f, W/f): a cell is known iff its whole patch is."""
    unknown = (~known).any(dim=1, keepdim=True).float()  # (B|1, 1, H, W)
    return F.max_pool2d(unknown, factor) == 0  # (B|1, 1, H/f, W/f)


def inpaint_through(denoise: Denoiser, schedule: Schedule, encoder: Encoder, image: Tensor, known: Tensor,
                    **keywords) -> Tensor:
    """Inpaint `image` (B, C, H, W) in [-1, 1] where `known` is False, with a denoiser of the encoder's space.

    RePaint-style inpainting (diffkit.edit.inpaint, same keywords) runs on encoder.encode(image) with the mask on
    the latent grid; the result is decoded and the known pixels are re-imposed, so they equal the input exactly.
    Latents are not bounded like pixels: leave clip_x0 at None for a LatentEncoder.
    """
    image = _as_batch(image)
    mask = known_mask(known, image)  # (B|1, C|1, H, W) bool
    with torch.inference_mode():
        z = encoder.encode(image)  # (B, c, h, w)
    factor = image.shape[-1] // z.shape[-1]
    z0 = inpaint(denoise, schedule, z, latent_mask(mask, factor), **keywords)
    with torch.inference_mode():
        decoded = encoder.decode(z0)  # (B, C, H, W)
    return torch.where(mask, image, decoded)
