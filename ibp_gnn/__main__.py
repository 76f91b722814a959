"""Command line: `python -m ibp_gnn {info,compress,demo}`."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _info(args) -> int:
    from . import load

    ct = load(args.path, mmap=True, verify=not args.no_verify)
    s = ct.stats()
    rows, cols = s["shape"]
    print(f"file            {args.path}")
    print(f"format version  {s['format_version']}")
    print(f"shape           {rows} x {cols}")
    print(f"dtype           {s['dtype']}")
    print(f"mask selector   {s['mode']} ({s['num_groups']} group{'s' if s['num_groups'] > 1 else ''})")
    print(f"raw bytes       {s['raw_bytes']:,}")
    print(f"stored bytes    {s['nbytes']:,} (payload {s['payload_bytes']:,}, index "
          f"{s['index_bytes']:,}, tables {s['table_bytes']:,})")
    print(f"ratio           {s['ratio']:.3f} host memory, {s['fetch_ratio']:.3f} fetch "
          "(raw bytes / payload bytes)")
    print(f"bits per row    {s['bits_per_row']:.1f} (raw {cols * ct.dtype.itemsize * 8})")
    for mode, n in s["rows_per_mode"].items():
        print(f"rows {mode:<10s} {n:,} ({100.0 * n / max(1, rows):.1f}%)")
    return 0


def _compress(args) -> int:
    from . import compress_file, load

    t = time.perf_counter()
    compress_file(args.src, args.dst, mode=args.mode)
    dt = time.perf_counter() - t
    ct = load(args.dst, mmap=True)
    print(f"{args.dst}: ratio {ct.ratio:.3f}, {ct.raw_nbytes / dt / 1e6:.0f} MB/s")
    return 0


def demo_matrices(rows: int = 20000, seed: int = 0) -> dict:
    """Built-in example features (no download): a sparse binary bag-of-words
    matrix and a dense embedding-like float32 matrix."""
    rng = np.random.default_rng(seed)
    bow = np.zeros((rows, 1000), np.float32)
    hits = rng.integers(5, 40, size=rows)
    for r, k in enumerate(hits):
        bow[r, rng.choice(1000, size=k, replace=False)] = 1.0
    emb = (rng.standard_normal((rows, 128)) * 0.1).astype(np.float32)
    return {"bag-of-words 20000x1000": bow, "embeddings 20000x128": emb}


def _demo(args) -> int:
    import torch

    from . import compress
    from . import load as load_file

    torch.manual_seed(0)
    print("ibp_gnn demo: compress built-in feature matrices, gather random batches, check "
          "them bit for bit against the raw tensor.\n")
    print(f"{'matrix':<26s}{'ratio':>8s}{'paper':>8s}{'encode MB/s':>13s}"
          f"{'gather GB/s':>13s}{'x[idx] GB/s':>13s}  exact")
    for name, x in demo_matrices().items():
        xt = torch.from_numpy(x)
        t = time.perf_counter()
        ct = compress(xt)
        enc = x.nbytes / (time.perf_counter() - t) / 1e6
        paper = compress(xt, mode="paper").ratio
        idx = torch.randint(0, x.shape[0], (4096,))
        out = torch.empty((4096, x.shape[1]), dtype=xt.dtype)
        ct.gather(idx, out=out)
        k, t = 0, time.perf_counter()
        while time.perf_counter() - t < 0.3:
            ct.gather(idx, out=out)
            k += 1
        gbs = out.nbytes * k / (time.perf_counter() - t) / 1e9
        k, t = 0, time.perf_counter()
        while time.perf_counter() - t < 0.3:
            torch.index_select(xt, 0, idx, out=out)
            k += 1
        raw = out.nbytes * k / (time.perf_counter() - t) / 1e9
        exact = torch.equal(ct.gather(idx).view(torch.int32), xt[idx].view(torch.int32))
        if args.save:
            ct.save(args.save)
            exact &= torch.equal(load_file(args.save).decompress().view(torch.int32),
                                 xt.view(torch.int32))
        print(f"{name:<26s}{ct.ratio:>8.2f}{paper:>8.2f}{enc:>13.0f}{gbs:>13.2f}{raw:>13.2f}  "
              f"{'yes' if exact else 'NO'}")
        if not exact:
            return 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ibp_gnn", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("info", help="describe an .ibp file")
    i.add_argument("path")
    i.add_argument("--no-verify", action="store_true", help="skip the checksum pass")
    i.set_defaults(fn=_info)
    c = sub.add_parser("compress", help="compress an .npy file into an .ibp file")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--mode", default="auto", choices=["auto", "paper"])
    c.set_defaults(fn=_compress)
    d = sub.add_parser("demo", help="compress and gather the built-in example")
    d.add_argument("--save", default=None, help="also save and reload through this .ibp path")
    d.set_defaults(fn=_demo)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, TypeError, OSError, MemoryError) as e:
        # Bad input (FormatError is a ValueError; missing files, directories, FIFOs, full
        # disks are OSErrors): one line, no traceback.
        print(f"error: {e or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
