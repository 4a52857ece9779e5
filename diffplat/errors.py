"""Errors the core raises with a precise cause."""


class NonFiniteError(FloatingPointError):
    """The denoiser returned NaN or Inf; the message names the sampler step."""
