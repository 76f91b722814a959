"""ibp_gnn command line (`ibp-gnn` or `python -m ibp_gnn`): describe, compress and demo
IBP feature files."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

import numpy as np
import torch


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


class ArgError(ValueError):
    """A command-line argument that cannot be used; the message starts with its name."""


DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int16", "int32", "int64")


def _read_input(src: str, key: Optional[str]):
    """The 2-D array or tensor in `src` (.npz member, .pt tensor / dict / PyG Data, else a
    memory-mapped .npy array); None for a file that is not a readable .npy."""
    from pathlib import Path

    path = Path(src)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".pt", ".pth"):  # an .npy array, whatever its name
        if key is not None:
            raise ArgError(f"--key={key!r}: an .npy file holds one array; --key is for .npz "
                           "and .pt inputs")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception:  # compress_file's reader says what is wrong with it
            return None
    if not path.is_file():
        raise ArgError(f"src: {src!r} does not exist" if not path.exists()
                       else f"src: {src!r} is not a regular file")
    if suffix == ".npz":
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as e:
            raise ArgError(f"src: {src!r} is not an .npz archive ({e})") from None
        with z:
            names = list(z.files)
            if key is None:
                if len(names) != 1:
                    raise ArgError(f"--key: {src!r} holds {names}; choose one with --key NAME")
                key = names[0]
            if key not in names:
                raise ArgError(f"--key={key!r}: {src!r} holds {names}")
            return z[key]
    if suffix in (".pt", ".pth"):
        from .datasets import DatasetError, load_pt

        try:
            obj = load_pt(path, "src")
        except DatasetError as e:
            raise ArgError(str(e)) from None
        if isinstance(obj, torch.Tensor):
            if key is not None:
                raise ArgError(f"--key={key!r}: {src!r} holds a single tensor, not a dict or Data")
            return obj
        name = type(obj).__name__
        keys = sorted(obj.keys()) if isinstance(obj, dict) else sorted(getattr(obj, "keys", list)())
        key = key or ("x" if "x" in keys else None)
        if key is None:
            raise ArgError(f"--key: {src!r} holds a {name} with {keys}; choose one with --key NAME")
        value = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise ArgError(f"--key={key!r}: {src!r} holds a {name} with tensors {keys}")
        return value


def _rounded(back: torch.Tensor, x: torch.Tensor) -> int:
    """How many values the cast changed (NaN stays NaN)."""
    diff = back != x
    if x.is_floating_point():
        diff &= ~(torch.isnan(back) & torch.isnan(x))
    return int(diff.sum())


def _cast(x, dtype: Optional[str]):
    """x as `dtype` (a numpy array, or a torch tensor for bfloat16), with a note on stderr
    when the cast rounds values."""
    if not isinstance(x, torch.Tensor):
        if dtype is None:
            return x  # an .npy stays memory-mapped: compress_file streams it
        x = torch.from_numpy(np.array(x))  # a writable copy (the input may be a read-only map)
    t = x
    if t.layout != torch.strided:
        raise ArgError(f"src: the tensor is sparse ({t.layout}); save x.to_dense() (IBP "
                       "stores sparse rows as their nonzeros)")
    t = t.contiguous()
    if dtype is not None:
        y = t.to(getattr(torch, dtype))
        changed = _rounded(y.to(t.dtype), t)
        if changed:
            print(f"note: --dtype {dtype} rounded {changed:,} of {t.numel():,} values (the "
                  "file is lossless for the cast values)", file=sys.stderr)
        t = y
    return t if t.dtype == torch.bfloat16 else t.numpy()


def _compress(args) -> int:
    from . import compress, compress_file, load

    x = _read_input(args.src, args.key)
    if x is None:  # not an .npy numpy reads: compress_file's reader names what is wrong
        compress_file(args.src, args.dst, mode=args.mode)
        ct = load(args.dst, mmap=True)
        print(f"{args.dst}: {ct.shape[0]} x {ct.shape[1]}, ratio {ct.ratio:.3f}")
        return 0
    streamed = isinstance(x, np.memmap) and args.dtype is None
    x = _cast(x, args.dtype)
    dtype = str(x.dtype).replace("torch.", "")
    if x.ndim != 2:
        raise ArgError(f"src: the features must be 2-D [rows, columns], got shape "
                       f"{tuple(x.shape)}")
    if dtype == "float64":
        raise ArgError("--dtype: the input is float64 (numpy's default), which IBP does not "
                       "hold; pass --dtype float32 (or float16, bfloat16) to cast it")
    if dtype not in DTYPES:
        raise ArgError(f"--dtype: the input is {dtype}; pass --dtype with one of {list(DTYPES)}")
    t = time.perf_counter()
    try:
        if isinstance(x, torch.Tensor):  # bfloat16: no numpy view
            compress(x, mode=args.mode).save(args.dst)
        else:  # an .npy file is streamed from its path, as before
            compress_file(args.src if streamed else x, args.dst, mode=args.mode)
    except OSError as e:
        raise ArgError(f"dst: {e}") from None
    dt = time.perf_counter() - t
    ct = load(args.dst, mmap=True)
    print(f"{args.dst}: {ct.shape[0]} x {ct.shape[1]} {dtype}, ratio {ct.ratio:.3f}, "
          f"{ct.raw_nbytes / dt / 1e6:.0f} MB/s")
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


def _prog() -> str:
    """`ibp-gnn` when run as the installed script, else `python -m ibp_gnn`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("ibp-gnn") else "python -m ibp_gnn"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=_prog(), description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("info", help="describe an .ibp file")
    i.add_argument("path")
    i.add_argument("--no-verify", action="store_true", help="skip the checksum pass")
    i.set_defaults(fn=_info)
    c = sub.add_parser("compress", help="compress features (.npy, .npz, .pt) into an .ibp file",
                       description="Compress a 2-D feature matrix into an .ibp file: an .npy "
                       "array (streamed, memory-mapped), an .npz member (--key), a .pt tensor, "
                       "dict of tensors or PyG Data (--key, default x).")
    c.add_argument("src", help="input: .npy, .npz or .pt")
    c.add_argument("dst", help="output .ibp file (written atomically)")
    c.add_argument("--key", default=None,
                   help="the array in an .npz, or the attribute of a .pt dict / PyG Data (x)")
    c.add_argument("--dtype", default=None, choices=list(DTYPES),
                   help="cast first (float64 inputs, numpy's default, need one; a note tells "
                        "how many values the cast rounded)")
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
