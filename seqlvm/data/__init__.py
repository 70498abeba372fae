"""Sequence data: the HDF5 format, its torch Dataset, imputation masks and the env generator.

``generate_dataset`` (which imports gymnasium and the environments) loads on first access only,
so ``import seqlvm.data`` stays free of gymnasium.
"""

from typing import Any

from seqlvm.data.dataset import SPLITS, SequenceDataset, split_indices
from seqlvm.data.h5 import FORMAT_VERSION, SequenceWriter, write_sequences
from seqlvm.data.masks import MaskSpec, block_mask, parse_mask_spec, random_mask
from seqlvm.data.polyphonic import PianoRolls, load_polyphonic  # noqa: F401  (local piano-roll files)

__all__ = [
    "FORMAT_VERSION", "SPLITS", "MaskSpec", "SequenceDataset", "SequenceWriter", "block_mask",
    "generate_dataset", "parse_mask_spec", "random_mask", "split_indices", "write_sequences",
]


def __getattr__(name: str) -> Any:
    if name == "generate_dataset":
        from seqlvm.data.generate import generate_dataset

        return generate_dataset
    raise AttributeError(f"module 'seqlvm.data' has no attribute {name!r}")
