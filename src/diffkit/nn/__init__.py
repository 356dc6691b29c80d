"""Neural networks for diffusion: the UNet and its building blocks."""

from diffkit.nn.layers import AttentionBlock, Downsample, ResBlock, Upsample, timestep_embedding
from diffkit.nn.unet import UNet, UNetConfig

__all__ = ["AttentionBlock", "Downsample", "ResBlock", "UNet", "UNetConfig", "Upsample", "timestep_embedding"]
