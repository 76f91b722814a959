"""ibp_gnn: GNN node features stored losslessly with Invariant Bit Packing,
gathered row by row on the CPU or straight from pinned host memory on the GPU."""
from ._tensor import (
    ChecksumError,
    CompressedTensor,
    FormatError,
    NewerFormatError,
    compress,
    compress_file,
    load,
)
from ._C import FORMAT_VERSION

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "CompressedTensor",
    "FORMAT_VERSION",
    "FormatError",
    "NewerFormatError",
    "compress",
    "compress_file",
    "load",
]
