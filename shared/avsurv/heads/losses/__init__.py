"""Losses of the heads, one per module: focal (CCLN), WCCL (CCLN), DMIL and center (AVACA)."""

from avsurv.heads.losses.center import center_loss
from avsurv.heads.losses.dmil import DMIL_ALPHA, dmil_loss, k_max
from avsurv.heads.losses.focal import focal_loss
from avsurv.heads.losses.wccl import WCCL_TEMPERATURE, wccl_loss

__all__ = ["DMIL_ALPHA", "WCCL_TEMPERATURE", "center_loss", "dmil_loss", "focal_loss", "k_max", "wccl_loss"]
