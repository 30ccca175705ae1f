"""Video data pipeline: PyAV decoding, dataset formats, VideoMAE sampling and augmentation, the
synthetic motion dataset, mask collation and bad-file accounting."""

from maskagain.data.bad_files import BadFileTracker, TooManyBadFiles
from maskagain.data.collate import MaskCollator
from maskagain.data.config import DataConfig
from maskagain.data.datasets import (
    ClipDataset,
    FrameFolder,
    SyntheticVideoDataset,
    VideoListDataset,
    build_dataset,
)
from maskagain.data.decode import VideoDecodeError, VideoFile, count_frames, read_clip
from maskagain.data.lists import ListFormatError, VideoRecord, read_list, scan_class_folders
from maskagain.data.sampling import dense_indices, sample_indices, segment_indices
from maskagain.data.synthetic import MOTIONS, SyntheticSpec, make_clip, write_synthetic_dataset
from maskagain.data.transforms import ClipTransform, MultiScaleCrop, build_transform

__all__ = [
    "MOTIONS",
    "BadFileTracker",
    "ClipDataset",
    "ClipTransform",
    "DataConfig",
    "FrameFolder",
    "ListFormatError",
    "MaskCollator",
    "MultiScaleCrop",
    "SyntheticSpec",
    "SyntheticVideoDataset",
    "TooManyBadFiles",
    "VideoDecodeError",
    "VideoFile",
    "VideoListDataset",
    "VideoRecord",
    "build_dataset",
    "build_transform",
    "count_frames",
    "dense_indices",
    "make_clip",
    "read_clip",
    "read_list",
    "sample_indices",
    "scan_class_folders",
    "segment_indices",
    "write_synthetic_dataset",
]
