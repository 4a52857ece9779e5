"""Audio: waveform diffusion with a 1D U-Net on folders of sounds and on spoken digits
(SC09-style, synthesised offline with espeak-ng), scored with DiffWave's classifier metrics.

``PLUGIN`` is this domain's declaration to diffplat (entry point ``diffplat.domains``); the
classes are imported on first use, so ``diffplat --help`` loads no audio library."""

from diffplat.plugins import DomainPlugin, lazy_exports

PLUGIN = DomainPlugin(
    name="audio",
    domain="domains.audio.domain:AudioDomain",
    summary="waveforms with a 1D U-Net; spoken digits synthesised offline; DiffWave's metrics",
    aliases=("digits",),
    mask_help="audio: the kept time ranges in seconds, e.g. 0:0.5 (continue the first half) "
              "or 0:0.25,0.75: (fill the middle)",
    prepare_help="digits: 4,160 spoken digits (104 espeak-ng voices, split by voice)",
    backbones=("domains.audio.unet:UNet1D",),
)

_EXPORTS = {"AudioDomain": "domains.audio.domain", "Clips": "domains.audio.domain",
            "UNet1D": "domains.audio.unet"}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = ["PLUGIN", *_EXPORTS]
