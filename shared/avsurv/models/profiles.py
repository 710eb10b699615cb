"""Model profiles: ``paper`` is EPG's pair of encoders (Wang et al. 2025, section 4.1: X3D-M and a
ResNet18-style audio CNN); ``tiny`` keeps the same interfaces and 512-d output but trains quickly on CPU;
``fg`` (the default) sees whole frames minus each camera's background (:mod:`avsurv.models.foreground`),
the input that lets a CPU-sized encoder recognise the same objects from another camera (issue 12), and
hears each clip's log-mel relative to its camera's noise floor (:mod:`avsurv.media.background`), so that a
microphone further from the street does not sound like another place.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from avsurv.models.audio import AudioConfig
from avsurv.models.foreground import ForegroundConfig
from avsurv.models.inputs import CropInput, ForegroundInput, VisualInput
from avsurv.models.x3d import X3DConfig


@dataclass(frozen=True)
class Profile:
    """One named pair of encoder configurations."""

    name: str
    description: str
    visual: X3DConfig | ForegroundConfig
    audio: AudioConfig
    amx_bf16: bool = False
    """Whether the ``auto`` precision trains and embeds it under bf16 autocast on a CPU with Intel AMX: only
    where that measured faster (``python bench/device_speed.py --device cpu``, docs/RESULTS.md)."""
    cpu_embed_batch: int | None = None
    """At most this many clips per forward of the visual encoder when embedding on a CPU, where smaller batches
    measured faster than one forward of the whole batch (their activations stay in the caches); None: no cap."""

    @property
    def input(self) -> VisualInput:
        """How the visual encoder's input is made from a clip's frames."""
        if isinstance(self.visual, ForegroundConfig):
            return ForegroundInput(self.visual.height, self.visual.width)
        return CropInput()


PAPER = Profile(
    name="paper",
    description="X3D-M (4,023,762 params, Kinetics-loadable) + ResNet18-style audio CNN (4,161,216 params)",
    visual=X3DConfig(),
    audio=AudioConfig(),
)

TINY = Profile(
    name="tiny",
    description="narrow X3D (206,614 params) on 56x56-pooled video + small ResNet audio CNN (157,008 params)",
    # 224 -> 56 before the stem: at 112 a batch of 32 takes ~1 s forward+backward on one CPU core.
    # Standardised embeddings: from scratch, unstandardised ones stayed near one vector for epochs.
    visual=X3DConfig(width_factor=0.5, depth_factor=0.4, head_dim_out=256, dropout_rate=0.0, input_pool=4,
                     standardize=True),
    audio=AudioConfig(widths=(16, 32, 48, 64), depths=(1, 1, 1, 1), stem_kernel=3, standardize=True),
)

FG = Profile(
    name="fg",
    description="3D CNN on whole 100x56 frames minus the camera's background (852,000 params) "
                "+ the tiny audio CNN on the log-mel minus the camera's noise floor (157,008 params)",
    visual=ForegroundConfig(),
    audio=TINY.audio,
    amx_bf16=True,  # training 38.6 vs 16.5 clips/s, embedding 117.4 vs 49.6 (tiny: training 39.6 vs 55.9)
    cpu_embed_batch=16,  # 32 clips on 2 cores: bf16 190 clips/s vs 154 in one forward, fp32 55 vs 51 (tiny: 132 vs 137)
)

PROFILES = MappingProxyType({profile.name: profile for profile in (PAPER, TINY, FG)})
"""Read-only: profile name -> :class:`Profile`, one for each of ``avsurv.constants.PROFILE_NAMES`` (the
names the settings check without importing torch), in that order."""
