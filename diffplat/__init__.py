"""diffplat: one diffusion core for audio, molecules and point clouds."""

from diffplat import guidance, losses, noise, samplers, schedules, targets

__version__ = "0.1.0"
__all__ = ["schedules", "targets", "losses", "noise", "samplers", "guidance", "__version__"]
