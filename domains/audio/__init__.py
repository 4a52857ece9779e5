"""Audio: waveform diffusion with a 1D U-Net on folders of sounds and on spoken digits
(SC09-style, synthesised offline with espeak-ng), scored with DiffWave's classifier metrics."""

from domains.audio.domain import AudioDomain, Clips
from domains.audio.unet import UNet1D

__all__ = ["AudioDomain", "Clips", "UNet1D"]
