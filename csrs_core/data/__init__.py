"""Data: image sets in memory and sample files (images), where files are read from and decoded
(sources), data sets by name and split (registry), fixed samples of a split (selection).

Every loader returns an ImageSet: uint8 images [N, C, H, W], integer labels, class names, and the
example indices in the original split (they seed the certification noise). The data root comes from
the `root` argument, else $CSRS_DATA, else ./data."""
from csrs_core.data.images import IMAGENET_MEAN, IMAGENET_STD, DatasetError, ImageSet
from csrs_core.data.registry import (DATASET_STATS, DATASETS, SPLITS, dataset_missing, dataset_names, dataset_spec,
                                     load_dataset)
from csrs_core.data.selection import select_examples
from csrs_core.data.sources import cache_dir, data_root

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DatasetError", "ImageSet", "DATASET_STATS", "DATASETS", "SPLITS",
           "dataset_missing", "dataset_names", "dataset_spec", "load_dataset", "select_examples", "cache_dir",
           "data_root"]
