"""Every constant taken from the papers, named as the papers name them; and, at the end, the model
profile and device names, which the platform's settings check without importing torch.

Source: Wang et al. 2025, "Embedding-based pair generation" (EPG), section 4.1 "Data", and the
project's decisions recorded in docs/METHOD.md. Nothing else in the code base restates these values.
"""

from typing import Final

# --- Clips (EPG section 4.1) -------------------------------------------------------------------
CLIP_SECONDS: Final = 1.0
"""Clips are 1-second, non-overlapping, capture-time aligned."""

VIDEO_FPS: Final = 5
"""Frames sampled per second of video, by timestamp."""

FRAMES_PER_CLIP: Final = int(VIDEO_FPS * CLIP_SECONDS)

FRAME_WIDTH: Final = 398
FRAME_HEIGHT: Final = 224
"""Every sampled frame is resized to 398x224 (width x height), aspect ratio not preserved."""

CROP_SIZE: Final = 224
"""Two overlapping 224x224 crops, left and right, are cut from each 398x224 frame."""

CROP_OFFSETS: Final = (0, FRAME_WIDTH - CROP_SIZE)
"""Horizontal start of the left and right crops: they overlap by 2 * 224 - 398 = 50 pixels."""

# --- Audio: log-mel as in Adapa 2019 (DCASE 2019 task 5), EPG section 4.1 -----------------------
SAMPLE_RATE: Final = 44_100
"""Audio is resampled to 44.1 kHz mono."""

N_FFT: Final = 2560
"""Decision (docs/METHOD.md): the paper's "window size of 256" is a typo for Adapa's 2560."""

HOP_LENGTH: Final = 694
N_MELS: Final = 128
FMIN: Final = 20.0
FMAX: Final = 22_050.0

MEL_FRAMES: Final = 1 + int(SAMPLE_RATE * CLIP_SECONDS) // HOP_LENGTH
"""Centred STFT frames in one second: 1 + 44100 // 694 = 64, giving the 128x64 input."""

DB_AMIN: Final = 1e-10
DB_TOP: Final = 80.0
"""power_to_db as librosa's defaults: 10*log10(max(S, amin)) with ref 1.0, floored at max - 80 dB."""

# --- Clip tensors --------------------------------------------------------------------------------
CLIP_FRAMES_SHAPE: Final = (FRAMES_PER_CLIP, FRAME_HEIGHT, FRAME_WIDTH, 3)
"""A clip's sampled frames as segmentation makes them: uint8 [time, height, width, RGB]."""

VIDEO_TENSOR_SHAPE: Final = (len(CROP_OFFSETS), 3, FRAMES_PER_CLIP, CROP_SIZE, CROP_SIZE)
"""[crops, channels, time, height, width] for one clip: [2, 3, 5, 224, 224]."""

AUDIO_TENSOR_SHAPE: Final = (1, N_MELS, MEL_FRAMES)
"""[channels, mel bins, frames] for one clip: [1, 128, 64]."""

# --- EPG learning (EPG sections 3, 4.1; docs/METHOD.md "Distance", "Pair labels", "Loss") --------
EMBEDDING_DIM: Final = 512
"""Both encoders map into one shared 512-d space Z; embeddings are not L2-normalised."""

W: Final = 0.5
"""Eq. 5 weight between squared Euclidean and cosine distance. Decision: the paper's "2.5" lies outside
[0, 1]; its own ablation (Table 3) uses 0.5 as the default row."""

SIGMA: Final = 0.0
"""Temporal constraint (Table 2): clips closer in time than sigma seconds are also positives."""

LR_VISUAL: Final = 2e-4
LR_AUDIO: Final = 1e-3
WEIGHT_DECAY: Final = 1e-5
"""Optimiser settings of F_v and F_a (section 4.1)."""

# --- AV-BT baseline (TACMA, Ran et al. 2022, sections 3.2 and 4) ---------------------------------
AVBT_LAMBDA: Final = 5e-3
"""Weight of the redundancy-reduction term (Eq. 2; Barlow Twins' value)."""

TACMA_PROJECTOR_DIMS: Final = (2048, 4096, 4096)
"""The paper's shared projector output sizes; training uses smaller ones on CPU (losses/avbt.py)."""

# --- Heads on frozen embeddings (avsurv.heads) ---------------------------------------------------
TACMA_THETA: Final = 0.03
"""TACMA Eq. 4, W_ij = exp(-theta |i - j| / M_ij): the best value of the ablation (section 4.3.3, Fig. 6)."""

CCLN_TAU_FULL: Final = 0.05
CCLN_TAU_WEAK: Final = 0.06
"""CCLN SBI gate h(tau) (Eq. 7-8) under fully / weakly supervised training (section V-A)."""

CCLN_LAMBDA: Final = 150.0
CCLN_ETA: Final = 25.0
"""CCLN Eq. 31, L = L_mfl + lambda L_mfe + eta L_mcl (section V-A, fully supervised). The head defaults to 1
and 1 instead, which trained far better in short CPU runs (avsurv.heads.ccln); these are its paper option."""

FOCAL_ALPHA: Final = 0.25
FOCAL_GAMMA: Final = 2.0
"""CCLN Eq. 28/32 use the focal loss's "default parameters": those of Lin et al. 2017 (and torchvision)."""

AVACA_THETA: Final = 10.0
AVACA_LAMBDA: Final = 1.0
"""AVACA loss theta L_DMIL + lambda L_c, the weights used on MAVAD (section V-B)."""

AVACA_HEADS: Final = 4
"""Attention heads of each AVACA transformer, VAT and AVT (section V-B)."""

# --- Downstream tasks (EPG sections 4.2, 4.3) ----------------------------------------------------
ANOMALY_STDS: Final = 2.0
"""A clip is anomalous when d(z_v, z_a) > mean + 2 std of the training clips' scores."""

SEARCH_EXCLUSION_S: Final = 60.0
"""Search results within 1 minute before or after the query are excluded."""
NOVELTY_EXCLUSION_S: Final = SEARCH_EXCLUSION_S
"""Site novelty's history starts this long before a clip: the seconds of its own event are not its
neighbours (``avsurv.tasks.novelty``; here so that settings need not import torch)."""

SEARCH_SEPARATION_S: Final = 60.0
"""Each search result is at least 1 minute from every higher-ranked result."""

# --- Names the settings check (the models are in avsurv.models, which imports torch) --------------
PROFILE_NAMES: Final = ("paper", "tiny", "fg")
"""The model profiles, in the order of ``avsurv.models.profiles.PROFILES`` (their encoders)."""

DEFAULT_PROFILE: Final = "fg"
"""What training uses unless told otherwise: the profile measured to work on CPU (docs/RESULTS.md)."""

DEVICES: Final = ("auto", "cpu", "cuda")
"""Where models run (``avsurv.models.device.resolve_device``): ``auto`` is CUDA when torch sees a GPU."""

PRECISIONS: Final = ("auto", "fp32", "bf16")
"""How the encoders' forward passes run (``avsurv.models.device.resolve_precision``): ``auto`` is bf16 autocast
for a profile measured faster so on a CPU with Intel AMX (``fg``), and float32 elsewhere."""

# --- Modalities ----------------------------------------------------------------------------------
VISUAL: Final = "visual"
AUDIO: Final = "audio"
MODALITIES: Final = (VISUAL, AUDIO)
"""The keys of every per-modality dict, in EPG's order (F_v, F_a): z_v before z_a in files and reports."""
