"""Writes the small frozen files of the current format version into tests/data.

Run once per released format version (python tests/data/make_files.py, or
with a name prefix to write only those cases of the version); never
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
    # From version 2: sparse rows (bitmap + one-entry dictionary, positions +
    # inline values), frame-of-reference words, several mask groups.
    rownorm = (torch.rand(50, 40, generator=g) < 0.4).float()
    rownorm = rownorm / rownorm.sum(1, keepdim=True).clamp(min=1)
    yield "float32_rownorm", rownorm, "auto"
    tfidf = (torch.rand(30, 200, generator=g) < 0.03) * torch.rand(30, 200, generator=g)
    yield "float32_tfidf", tfidf, "auto"
    yield "int32_for", torch.randint(-300, 300, (80, 6), generator=g).int() + 1_000_000, "auto"
    two = torch.cat([torch.rand(300, 16, generator=g) * 0.01,
                     torch.rand(300, 16, generator=g) * 100 + 1000])
    yield "float32_groups", two[torch.randperm(600, generator=g)], "auto"
    # From version 3: coded rows (plain bits + ranked exponent codes, escapes),
    # fp32 with NaN, Inf, -0.0 and denormals, fp16 of odd width, bf16.
    emb = torch.randn(400, 24, generator=g) * 0.2
    emb[5, :4] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-40])
    emb[7] = torch.randn(24, generator=g) * 1e6
    yield "float32_coded", emb, "auto"
    yield "float16_coded_odd", (torch.randn(1500, 13, generator=g) * 0.3).half(), "auto"
    yield "bfloat16_coded", (torch.randn(1500, 10, generator=g) * 0.05).bfloat16(), "auto"
    # From version 4: coded-form sparse rows (Rice-coded gaps, zigzag-unary
    # high bits): TF-IDF-like fp32 with NaN, Inf, -0.0 and denormals listed,
    # fp16 of odd width, bf16, sparse int32 and int64.
    g = torch.Generator().manual_seed(2027)

    def sparse(rows, cols, density, scale):
        keep = torch.rand(rows, cols, generator=g) < density
        return keep * (torch.rand(rows, cols, generator=g) * scale)

    tfidf = sparse(60, 300, 0.05, 0.3)
    tfidf[4, :5] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-40, -float("inf")])
    yield "sparse_float32_tfidf", tfidf, "auto"
    yield "sparse_float16_odd", sparse(40, 301, 0.05, 2.0).half(), "auto"
    yield "sparse_bfloat16", sparse(40, 130, 0.05, 0.1).bfloat16(), "auto"
    yield "sparse_int32", (sparse(40, 200, 0.04, 1.0) * 2**31).int(), "auto"
    yield "sparse_int64", (sparse(30, 90, 0.05, 1.0) * 2**40).long(), "auto"


if __name__ == "__main__":
    import sys

    v = ibp_gnn.FORMAT_VERSION
    prefix = sys.argv[1] if len(sys.argv) > 1 else ""  # e.g. "sparse": only those cases
    for name, x, mode in cases():
        if not name.startswith(prefix):
            continue
        ct = ibp_gnn.compress(x, mode=mode)
        ct.save(HERE / f"v{v}_{name}.ibp")
        raw = x.contiguous().view(torch.uint8).numpy() if x.numel() else np.zeros((0, 0), np.uint8)
        np.save(HERE / f"v{v}_{name}.raw.npy", raw)
        print(f"v{v}_{name}: {tuple(x.shape)} {x.dtype} groups={ct.num_groups} "
              f"rows={ct.stats()['rows_per_mode']}")
