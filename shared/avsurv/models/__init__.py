"""The encoders of EPG (Wang et al. 2025): F_v, an X3D-M video encoder laid out as PyTorchVideo's
``create_x3d`` (Feichtenhofer 2020), and F_a, a ResNet18-style log-mel encoder, both into one 512-d space."""

from avsurv.models.audio import AudioConfig, AudioEncoder
from avsurv.models.kinetics import KineticsLoadReport, load_kinetics_x3d
from avsurv.models.model import AudioVisualModel, build_model, count_parameters, inference_copy
from avsurv.models.profiles import PROFILES, Profile
from avsurv.models.x3d import X3D, X3DConfig

VisualEncoder = X3D

__all__ = [
    "PROFILES",
    "X3D",
    "AudioConfig",
    "AudioEncoder",
    "AudioVisualModel",
    "KineticsLoadReport",
    "Profile",
    "VisualEncoder",
    "X3DConfig",
    "build_model",
    "count_parameters",
    "inference_copy",
    "load_kinetics_x3d",
]
