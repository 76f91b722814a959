"""Writes the small frozen files of the current format version into tests/data.

Run once per released format version (python tests/data/make_files.py); never
regenerate the files of an earlier version: test_regression.py checks that
they still decode to the arrays saved beside them.
"""
from pathlib import Path

import numpy as np
import torch

import ibp_gnn

HERE = Path(__file__).resolve().parent


def cases():
    g = torch.Generator().manual_seed(2026)
    bow = (torch.rand(40, 37, generator=g) < 0.1).float()
    bow[3] = float("nan")
    yield "float32_bow", bow, "auto"
    yield "float32_bow_paper", bow, "paper"
    yield "float16_odd", (torch.randn(21, 5, generator=g) * 3).half(), "auto"
    yield "bfloat16", torch.randn(9, 8, generator=g).bfloat16(), "auto"
    yield "uint8_odd", torch.randint(0, 4, (33, 7), generator=g, dtype=torch.uint8), "auto"
    yield "int64", torch.randint(-5, 1000, (70, 3), generator=g), "auto"
    yield "int32_random", torch.randint(-2**31, 2**31 - 1, (12, 4), generator=g).int(), "auto"
    yield "empty", torch.zeros(0, 4), "auto"


if __name__ == "__main__":
    v = ibp_gnn.FORMAT_VERSION
    for name, x, mode in cases():
        ibp_gnn.compress(x, mode=mode).save(HERE / f"v{v}_{name}.ibp")
        raw = x.contiguous().view(torch.uint8).numpy() if x.numel() else np.zeros((0, 0), np.uint8)
        np.save(HERE / f"v{v}_{name}.raw.npy", raw)
        print(f"v{v}_{name}: {tuple(x.shape)} {x.dtype}")
