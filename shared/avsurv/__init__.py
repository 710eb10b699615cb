"""avsurv: self-supervised audio-visual representations of surveillance streams."""

__version__ = "0.1.0"
