"""Editing through an encoder: inpainting with the pixel mask moved to the latent grid and the known pixels put
back after decoding, image-to-image and interpolation on the encoded images (DESIGN.md, "Latent diffusion").

Diffusion in latent space cannot keep pixels exact: a latent cell stands for an f x f patch, and the decoder
mixes neighbouring cells. So the latent run treats a cell as known only when every pixel of its patch (in every
channel) is known, and the decoded image takes the known pixels from the input, bit for bit. Steps come back as
`DecodedStep`s (pixels, decoded only when looked at). Latents are not bounded like pixels: no clip_x0 here.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit.edit import _as_batch, img2img_steps, inpaint_steps, interpolate, known_mask
from diffkit.encoders import DecodedStep, Encoder, decoded_steps
from diffkit.process import Denoiser
from diffkit.sampling import run_to_end
from diffkit.schedule import Schedule


def latent_mask(known: Tensor, factor: int) -> Tensor:
    """A bool mask (B|1, C|1, H, W) of known pixels -> (B|1, 1, H/f, W/f): a cell is known iff its whole patch is."""
    unknown = (~known).any(dim=1, keepdim=True).float()  # (B|1, 1, H, W)
    return F.max_pool2d(unknown, factor) == 0  # (B|1, 1, H/f, W/f)


def encoded(encoder: Encoder, images: Tensor) -> Tensor:
    """encoder.encode of images (B, C, H, W) in [-1, 1], without gradients."""
    with torch.inference_mode():
        return encoder.encode(images)


def inpaint_steps_through(denoise: Denoiser, schedule: Schedule, encoder: Encoder, image: Tensor, known: Tensor,
                          **keywords) -> Iterator[DecodedStep]:
    """RePaint steps (diffkit.edit.inpaint_steps, same keywords) on encoder.encode(image) with the mask on the latent
    grid, seen in pixels with the known pixels of `image` re-imposed, so the last step's equal the input exactly."""
    image = _as_batch(image)
    mask = known_mask(known, image)  # (B|1, C|1, H, W) bool
    z = encoded(encoder, image)  # (B, c, h, w)
    factor = image.shape[-1] // z.shape[-1]
    steps = inpaint_steps(denoise, schedule, z, latent_mask(mask, factor), **keywords)
    return decoded_steps(steps, lambda latent: torch.where(mask, image, encoder.decode(latent)))


def inpaint_through(denoise: Denoiser, schedule: Schedule, encoder: Encoder, image: Tensor, known: Tensor,
                    **keywords) -> Tensor:
    """Inpaint `image` (B, C, H, W) in [-1, 1] where `known` is False, with a denoiser of the encoder's space: the
    last of `inpaint_steps_through`, whose known pixels equal the input exactly."""
    return run_to_end(inpaint_steps_through(denoise, schedule, encoder, image, known, **keywords))


def img2img_steps_through(denoise: Denoiser, schedule: Schedule, encoder: Encoder, image: Tensor, strength: float,
                          **keywords) -> Iterator[DecodedStep]:
    """SDEdit steps (diffkit.edit.img2img_steps, same keywords) started from the encoded image, seen in pixels."""
    z = encoded(encoder, _as_batch(image))
    return decoded_steps(img2img_steps(denoise, schedule, z, strength, **keywords), encoder.decode)


def interpolate_through(denoise: Denoiser, schedule: Schedule, encoder: Encoder, image_a: Tensor, image_b: Tensor,
                        **keywords) -> Tensor:
    """diffkit.edit.interpolate (same keywords) between the encoded images; the strip decoded to pixels."""
    strip = interpolate(denoise, schedule, encoded(encoder, _as_batch(image_a)), encoded(encoder, _as_batch(image_b)),
                        **keywords)
    with torch.inference_mode():
        return encoder.decode(strip)
