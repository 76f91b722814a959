"""Writes the small frozen files of format version 4's row layout kSectors
(tests/data/v4_layout_*) with the encoder: python tests/data/make_v4_layout.py.

Run once; never regenerate them: test_regression.py and
test_format_v4_layout.py check that they still decode to the arrays saved
beside them and that their rows sit where the layout puts them.
"""
from pathlib import Path

import numpy as np
import torch

import ibp_gnn

HERE = Path(__file__).resolve().parent


def cases():
    g = torch.Generator().manual_seed(2604)
    # Embedding-like fp32 (kCoded rows of ~80 bytes), with NaN, Inf, -0.0, a denormal.
    emb = torch.randn(400, 24, generator=g) * 0.2
    emb[3, :4] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-40])
    yield "float32_coded", emb
    # fp16 of odd width (2 units a word, a zero padding unit).
    yield "float16_coded_odd", (torch.randn(1500, 13, generator=g) * 0.3).half()
    # Raw rows of 226 bits: every row but the first moves to a sector boundary.
    yield "int32_raw7", torch.randint(-2**31, 2**31 - 1, (40, 7), generator=g,
                                      dtype=torch.int64).to(torch.int32)
    # Raw rows of 4066 bits, about the widest 16-bit offsets hold (blocks of
    # 16 rows): rows move to 4096-bit slots, the last of a block at rel 61440.
    yield "int32_raw127", torch.randint(-2**31, 2**31 - 1, (48, 127), generator=g,
                                        dtype=torch.int64).to(torch.int32)
    # Sparse and kIbp rows (bag of words), mixed lengths.
    bow = (torch.rand(40, 150, generator=g) < 0.05).float()
    bow[7] = torch.rand(150, generator=g)
    yield "float32_bow", bow


if __name__ == "__main__":
    v = ibp_gnn.FORMAT_VERSION
    assert v == 4
    for name, x in cases():
        ct = ibp_gnn.compress(x, layout="sectors")
        ct.save(HERE / f"v{v}_layout_{name}.ibp")
        raw = x.contiguous().view(torch.uint8).numpy()
        np.save(HERE / f"v{v}_layout_{name}.raw.npy", raw)
        print(f"v{v}_layout_{name}: {tuple(x.shape)} {x.dtype} rows={ct.stats()['rows_per_mode']} "
              f"payload_bits={ct._fields['payload_bits']} "
              f"packed={ibp_gnn.compress(x, layout='packed')._fields['payload_bits']}")
