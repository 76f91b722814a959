"""The dtypes a compressed tensor can hold, and their codes in the file header."""
from __future__ import annotations

import numpy as np
import torch

# Order matches ibp::DType in csrc/ibp/format.h.
TORCH_DTYPES = (
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
)
_NUMPY_CODES = {
    np.dtype(np.float32): 0,
    np.dtype(np.float16): 1,
    np.dtype(np.int8): 3,
    np.dtype(np.uint8): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
}
SUPPORTED = ", ".join(str(d).replace("torch.", "") for d in TORCH_DTYPES)


def code_of(dtype, what: str) -> int:
    """Header code of a torch or numpy dtype; TypeError naming `what` otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype in TORCH_DTYPES:
            return TORCH_DTYPES.index(dtype)
    else:
        code = _NUMPY_CODES.get(np.dtype(dtype))
        if code is not None:
            return code
    raise TypeError(f"{what}: unsupported dtype {dtype}; supported: {SUPPORTED}")


def torch_dtype(code: int) -> torch.dtype:
    return TORCH_DTYPES[code]


def itemsize(code: int) -> int:
    return torch.empty((), dtype=TORCH_DTYPES[code]).element_size()
