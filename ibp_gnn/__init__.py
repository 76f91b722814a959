"""ibp_gnn: GNN node features stored losslessly with Invariant Bit Packing,
gathered row by row on the CPU or straight from pinned host memory on the GPU."""
from ._tensor import (
    ChecksumError,
    CompressedTensor,
    FileChangedError,
    FormatError,
    NewerFormatError,
    compress,
    compress_file,
    load,
)
from ._C import FORMAT_VERSION
from .prefetch import EpochStats, Prefetcher

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "CompressedTensor",
    "EpochStats",
    "FORMAT_VERSION",
    "FileChangedError",
    "FormatError",
    "NewerFormatError",
    "Prefetcher",
    "compress",
    "compress_file",
    "load",
]
