"""Video data pipeline: PyAV decoding, dataset formats, VideoMAE sampling and augmentation, the
synthetic motion dataset, mask collation and bad-file accounting.

    cfg = DataConfig(root="/data/k400", train_list="train.csv", val_list="val.csv")
    ds = build_dataset(cfg, "train", "pretrain")          # items: {"video": (C, T, H, W), ...}
    loader = DataLoader(ds, batch_size=8, collate_fn=MaskCollator("tube", 0.9, (8, 14, 14)))
    tracker = BadFileTracker(cfg.max_bad_fraction, cfg.min_samples_for_bad_check)
    for batch in loader:                                  # batch["mask"]: (B, N) bool, True = hidden
        tracker.update(batch)

    frames = read_clip("video.webm", [0, 4, 8], short_side=256)   # uint8 (T, H, W, C)

Kinds: ``list`` (``path label`` lines, space or comma), ``folder`` (``root/[split/]class/video``),
``frames`` (``path num_frames label`` + ``img_{:05d}.jpg`` folders), ``shards`` (tar shards and
the ``index.json`` of ``maskagain prepare --shards``, local or in object storage), ``synthetic``
(generated on the fly; ``maskagain make-synthetic --out DIR`` writes the same clips as mp4 + list
files).
"""

from maskagain._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "bad_files": ["BadFileTracker", "TooManyBadFiles"],
        "collate": ["MaskCollator"],
        "config": ["DataConfig"],
        "datasets": [
            "ClipDataset",
            "FrameFolder",
            "SyntheticVideoDataset",
            "VideoListDataset",
            "build_dataset",
        ],
        "decode": ["VideoDecodeError", "VideoFile", "count_frames", "read_clip"],
        "lists": ["ListFormatError", "VideoRecord", "read_list", "scan_class_folders"],
        "sampling": ["dense_indices", "sample_indices", "segment_indices"],
        "shard_dataset": ["ShardDataset"],
        "shards": ["ShardIndex"],
        "synthetic": ["MOTIONS", "SyntheticSpec", "make_clip", "write_synthetic_dataset"],
        "transforms": ["ClipTransform", "MultiScaleCrop", "build_transform"],
    },
)

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
    "ShardDataset",
    "ShardIndex",
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
