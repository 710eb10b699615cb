"""Media: decoding files and streams, and cutting them into the paper's 1-second clips."""

from avsurv.media.decode import MediaInfo, MediaReader
from avsurv.media.segment import Clip, Segmenter, SegmentReport, SkippedClip

__all__ = ["Clip", "MediaInfo", "MediaReader", "SegmentReport", "Segmenter", "SkippedClip"]
