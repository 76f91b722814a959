"""A bounded fuzz run over the file loader and the gather-decoder.

Real .ibp files (the frozen files of tests/data and, where present, one
compressed from a real dataset in ../shared/datasets) get structural
mutations: header fields, index entries, mask tables, row tags, group ids and
payload bits, section sizes made to agree with a mutated header, and then
every CRC recomputed, so the mutated file gets past the checksums to the
structure validation and the decoder. Each case is loaded (read and mapped,
alternately) and, when accepted, gathered, in a worker process under an
address-space limit and a time limit. A worker that dies of a signal, exits
unexpectedly or stops answering is a crash: the case is recorded and a new
worker continues after it. The run must report 0 crashes and raise nothing but
FormatError (or MemoryError) for the files it rejects.

About 2 s of cases per commit; IBP_LONG_TESTS=1 runs 30x more
(IBP_FUZZ_CASES and IBP_FUZZ_SEED override the count and the seed).
"""
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared" / "datasets"

HEADER = "<8s4I2Q6IQ4Q4I8s"
NAMES = ("magic", "version", "header_bytes", "dtype", "word_view", "rows", "cols", "row_words",
         "num_groups", "group_bits", "block_rows", "rel_bytes", "selector", "payload_bits",
         "mode_rows0", "mode_rows1", "mode_rows2", "mode_rows3", "crc_tables", "crc_index",
         "crc_payload", "crc_header", "reserved")
MUTABLE = NAMES[1:18]
ALIGN, PAD_WORDS, MAX_FILE = 64, 2, 32 << 20  # format.h kSectionAlign, kPayloadPadWords
CASE_TIMEOUT_S = 20.0
ADDRESS_SPACE_HEADROOM = 3 << 30  # what a case may allocate beyond the worker's start


def _u(bits: int, v: int) -> int:
    return v % (1 << bits)


def parse(data: bytes):
    f = dict(zip(NAMES, struct.unpack(HEADER, data[:128])))
    lay = layout(f)
    sections = {k: bytearray(data[v[0]:v[0] + v[1]]) for k, v in lay.items() if k != "total"}
    return f, sections


def layout(f: dict):
    """Section offsets and sizes from header fields (format.h FileLayout), or None
    when the fields describe no layout at all."""
    if f["block_rows"] == 0:
        return None
    blocks = -(-f["rows"] // f["block_rows"])
    sizes = (("tables", 8 * f["num_groups"] * f["row_words"]), ("bases", 8 * (blocks + 1)),
             ("rel", f["rel_bytes"] * f["rows"]),
             ("payload", 4 * (-(-f["payload_bits"] // 32) + PAD_WORDS)))
    out, pos = {}, 128
    for name, n in sizes:
        pos = -(-pos // ALIGN) * ALIGN
        out[name] = (pos, n)
        pos += n
    out["total"] = pos
    return out


def build(f: dict, sections: dict, fix_size: bool = True) -> bytes:
    """A file from fields and sections: sections cut or zero-padded to what the
    header describes (when it describes a file of bounded size), CRCs recomputed."""
    lay = layout(f)
    if lay is None or lay["total"] > MAX_FILE or not fix_size:
        body = b"".join(bytes(s) for s in sections.values())
        f = dict(f, crc_header=0)
        head = struct.pack(HEADER, *(f[n] for n in NAMES))
        f["crc_header"] = zlib.crc32(head)
        return struct.pack(HEADER, *(f[n] for n in NAMES)) + body
    buf = bytearray(lay["total"])
    for name in ("tables", "bases", "rel", "payload"):
        o, n = lay[name]
        s = bytes(sections[name][:n])
        buf[o:o + len(s)] = s
    sec = {k: bytes(buf[v[0]:v[0] + v[1]]) for k, v in lay.items() if k != "total"}
    f = dict(f, crc_tables=zlib.crc32(sec["tables"]),
             crc_index=zlib.crc32(sec["rel"], zlib.crc32(sec["bases"])),
             crc_payload=zlib.crc32(sec["payload"]), crc_header=0)
    f["crc_header"] = zlib.crc32(struct.pack(HEADER, *(f[n] for n in NAMES)))
    buf[:128] = struct.pack(HEADER, *(f[n] for n in NAMES))
    return bytes(buf)


def interesting(rng, orig: int, bits: int) -> int:
    c = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 255, 256, 4095, 65535, 65536,
         2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
         orig + 1, orig - 1, orig * 2, orig // 2, orig + 64, orig - 64, orig ^ (1 << int(rng.integers(bits))),
         int(rng.integers(0, 1 << min(bits, 62)))]
    return _u(bits, int(c[int(rng.integers(len(c)))]))


def _bits_of(name: str) -> int:
    fmt = dict(zip(NAMES, ["8s", "I", "I", "I", "I", "Q", "Q", "I", "I", "I", "I", "I", "I", "Q",
                           "Q", "Q", "Q", "Q", "I", "I", "I", "I", "8s"]))[name]
    return 64 if fmt == "Q" else 32


def _row_starts(f, s):
    try:
        rel = np.frombuffer(bytes(s["rel"]), "<u2" if f["rel_bytes"] == 2 else "<u4")
        bases = np.frombuffer(bytes(s["bases"]), "<u8")
        b = max(1, f["block_rows"])
        ids = np.arange(len(rel))
        return bases[ids // b].astype(np.int64) + rel.astype(np.int64)
    except (ValueError, IndexError, OverflowError):
        return np.zeros(0, np.int64)


def mutate(data: bytes, rng) -> tuple:
    """(mutated file bytes, description)."""
    f, s = parse(data)
    done = []
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.choice(["payload", "rowstart", "index", "tables", "header", "rows",
                           "payload_bits", "raw"], p=[.25, .15, .2, .08, .15, .07, .05, .05])
        if kind == "payload" and len(s["payload"]):
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(len(s["payload"])))
                s["payload"][i] ^= 1 << int(rng.integers(8))
            done.append("payload bits")
        elif kind == "rowstart":
            starts = _row_starts(f, s)
            if len(starts) and len(s["payload"]):
                r = int(rng.integers(len(starts)))
                bit = int(starts[r]) + int(rng.integers(0, 8))
                if 0 <= bit // 8 < len(s["payload"]):
                    s["payload"][bit // 8] ^= 1 << (bit % 8)
                    done.append(f"row {r} tag/group bit {bit - int(starts[r])}")
        elif kind == "index":
            which = "bases" if rng.random() < 0.5 or not len(s["rel"]) else "rel"
            width = 8 if which == "bases" else f["rel_bytes"] if f["rel_bytes"] in (2, 4) else 2
            n = len(s[which]) // width
            if n:
                j = int(rng.integers(n))
                old = int.from_bytes(s[which][j * width:(j + 1) * width], "little")
                v = interesting(rng, old, 8 * width)
                s[which][j * width:(j + 1) * width] = v.to_bytes(width, "little")
                done.append(f"{which}[{j}] {old} -> {v}")
        elif kind == "tables" and len(s["tables"]) >= 4:
            j = int(rng.integers(len(s["tables"]) // 4))
            v = interesting(rng, int.from_bytes(s["tables"][4 * j:4 * j + 4], "little"), 32)
            s["tables"][4 * j:4 * j + 4] = v.to_bytes(4, "little")
            done.append(f"tables word {j} -> {v}")
        elif kind == "header":
            name = MUTABLE[int(rng.integers(len(MUTABLE)))]
            v = interesting(rng, f[name], _bits_of(name))
            done.append(f"{name} {f[name]} -> {v}")
            f[name] = v
        elif kind == "rows":
            d = int(rng.choice([-65, -64, -1, 1, 63, 64, 1000]))
            rows = max(0, f["rows"] + d)
            m = int(rng.integers(4)) if rng.random() < 0.3 else 1
            f["mode_rows" + str(m)] = max(0, f["mode_rows" + str(m)] + rows - f["rows"])
            done.append(f"rows {f['rows']} -> {rows}, mode_rows{m} adjusted")
            f["rows"] = _u(64, rows)
            for m in range(4):
                f[f"mode_rows{m}"] = _u(64, f[f"mode_rows{m}"])
        elif kind == "payload_bits":
            d = int(rng.choice([-33, -32, -1, 1, 31, 32, 4096]))
            done.append(f"payload_bits {f['payload_bits']} -> {max(0, f['payload_bits'] + d)}")
            f["payload_bits"] = _u(64, max(0, f["payload_bits"] + d))
        elif kind == "raw":
            sec = ["tables", "bases", "rel", "payload"][int(rng.integers(4))]
            cut = int(rng.integers(0, len(s[sec]) + 1))
            s[sec] = s[sec][:cut]
            done.append(f"{sec} cut to {cut} bytes")
    fix = rng.random() < 0.97
    return build(f, s, fix_size=fix), "; ".join(done) + ("" if fix else "; sizes not fixed")


def sources(tmp: Path, shared: bool = True):
    """(name, bytes) of the real files the run mutates."""
    out = [(p.name, p.read_bytes()) for p in sorted(DATA.glob("v*.ibp"))]
    cora = SHARED / "cora"
    if shared and cora.is_dir():
        try:
            import ibp_gnn
            from ibp_gnn.testing import load_shared

            x = np.ascontiguousarray(load_shared("cora")[:300])
            ibp_gnn.compress(x).save(tmp / "cora300.ibp")
            out.append(("cora300.ibp", (tmp / "cora300.ibp").read_bytes()))
        except Exception:  # the frozen files alone still make the run
            pass
    return out


# ---- the worker --------------------------------------------------------------------------------
def worker(case_dir: str, first: int, count: int, seed: int) -> None:
    import resource

    import torch

    import ibp_gnn

    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + ADDRESS_SPACE_HEADROOM, resource.RLIM_INFINITY))
    srcs = sorted(Path(case_dir).glob("src_*"))
    blobs = [p.read_bytes() for p in srcs]
    path = Path(case_dir) / f"case_{os.getpid()}.ibp"
    # IBP_FUZZ_PLANT="crash:3,hang:5": the harness's own test plants failures.
    planted = {int(c): kind for kind, c in (item.split(":") for item in
                                            os.environ.get("IBP_FUZZ_PLANT", "").split(",") if item)}
    for blob in blobs:  # warm up (lazy imports, first mapping) before the clock runs
        path.write_bytes(blob)
        warm = ibp_gnn.load(path, mmap=True)
        if len(warm):
            warm.gather(torch.zeros(1, dtype=torch.int64))
            break
    del warm
    for i in range(first, first + count):
        rng = np.random.default_rng([seed, i])
        k = int(rng.integers(len(blobs)))
        data, _ = mutate(blobs[k], rng)
        path.write_bytes(data)
        print(f"BEGIN {i}", flush=True)
        if planted.get(i) == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if planted.get(i) == "hang":
            time.sleep(3600)
        ct = None
        try:
            ct = ibp_gnn.load(path, mmap=bool(i % 2), threads=1 + i % 2)
            n = len(ct)
            if n:
                ids = np.concatenate([np.arange(min(n, 1024)), [n - 1],
                                      rng.integers(0, n, 256)]).astype(np.int64)
                ct.gather(torch.from_numpy(ids), threads=1 + (i // 2) % 2)
                ct.fetch_nbytes(ids)
            status = "accepted"
        except (ibp_gnn.FormatError, MemoryError) as e:
            status = "rejected " + type(e).__name__
        except Exception as e:  # noqa: BLE001  (reported by the parent)
            status = f"unexpected {type(e).__name__}: {str(e)[:200]}"
        print(f"END {i} {status}", flush=True)
        del ct  # release the mapping before the next file
    path.unlink(missing_ok=True)


def run_fuzz(tmp: Path, cases: int, seed: int, plant: str = "",
             case_timeout: float = CASE_TIMEOUT_S, shared: bool = True) -> dict:
    """Runs `cases` cases in workers; returns counts and the failing cases."""
    for name, data in sources(tmp, shared):
        (tmp / f"src_{name}").write_bytes(data)
    result = {"accepted": 0, "rejected": 0, "crashes": [], "hangs": [], "unexpected": []}
    env = dict(os.environ, OMP_NUM_THREADS="1", IBP_FUZZ_PLANT=plant)
    i = 0
    while i < cases:
        p = subprocess.Popen([sys.executable, __file__, "worker", str(tmp), str(i),
                              str(cases - i), str(seed)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
        current, last = None, time.time()
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        startup = 120.0  # importing torch on a loaded machine
        # The worker's lines are read from the pipe's descriptor and split here:
        # a buffered readline could take "END i" and "BEGIN i + 1" in one read
        # and leave the second in its buffer, where select() does not see it
        # (case i was then reported as a hang when case i + 1 hung).
        fd, pending, eof = p.stdout.fileno(), b"", False
        while not eof:
            limit = startup + case_timeout
            if not sel.select(timeout=max(0.1, limit - (time.time() - last))):
                if time.time() - last > limit:
                    p.kill()
                    result["hangs"].append(current)
                    break
                continue
            chunk = os.read(fd, 1 << 16)
            eof = not chunk
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                last = time.time()
                startup = 0.0
                word, num, *rest = line.split(" ", 2) + [""]
                if word == "BEGIN":
                    current = int(num)
                elif word == "END":
                    status = rest[0].strip()
                    if status == "accepted":
                        result["accepted"] += 1
                    elif status.startswith("rejected"):
                        result["rejected"] += 1
                    else:
                        result["unexpected"].append((int(num), status))
                    current = None
                    i = int(num) + 1
        rc = p.wait()
        sel.close()
        if current is not None:
            if not result["hangs"] or result["hangs"][-1] != current:
                result["crashes"].append((current, rc, p.stderr.read()[-500:]))
            i = current + 1
        elif rc != 0:
            result["crashes"].append((i, rc, p.stderr.read()[-500:]))
            i += 1
        elif i < cases:  # the worker ended cleanly before its last case: should not happen
            result["crashes"].append((i, rc, "worker stopped early"))
            i += 1
    return result


def describe(case: int, seed: int, tmp: Path) -> str:
    blobs = [p.read_bytes() for p in sorted(tmp.glob("src_*"))]
    names = [p.name[4:] for p in sorted(tmp.glob("src_*"))]
    rng = np.random.default_rng([seed, case])
    k = int(rng.integers(len(blobs)))
    return f"case {case}: {names[k]}: {mutate(blobs[k], rng)[1]}"


def test_fuzz_loader_and_gather(tmp_path):
    long = os.environ.get("IBP_LONG_TESTS") == "1"
    cases = int(os.environ.get("IBP_FUZZ_CASES", 12000 if long else 400))
    seed = int(os.environ.get("IBP_FUZZ_SEED", 20261201))
    r = run_fuzz(tmp_path, cases, seed)
    bad = ([describe(c, seed, tmp_path) + f" -> crash rc={rc}: {err}" for c, rc, err in r["crashes"]]
           + [describe(c, seed, tmp_path) + " -> hang" for c in r["hangs"] if c is not None]
           + [describe(c, seed, tmp_path) + f" -> {s}" for c, s in r["unexpected"]])
    print(f"fuzz: {cases} cases, {r['accepted']} accepted, {r['rejected']} rejected, "
          f"{len(r['crashes'])} crashes, {len(r['hangs'])} hangs, "
          f"{len(r['unexpected'])} unexpected exceptions")
    assert not bad, "\n".join(bad[:20])
    assert r["accepted"] + r["rejected"] == cases
    # The run reaches past the checksums: some mutations are structurally valid
    # (accepted, decoded) and many are rejected by the structure checks.
    assert r["accepted"] > 0 and r["rejected"] > cases // 4


def test_fuzz_harness_reports_crashes_and_hangs(tmp_path):
    """A worker killed by a signal and one that stops answering are each
    reported at their case, and the run continues after them."""
    r = run_fuzz(tmp_path, 6, 7, plant="crash:1,hang:3", case_timeout=5.0,
                 shared=False)
    assert [c for c, _, _ in r["crashes"]] == [1]
    assert r["crashes"][0][1] == -signal.SIGSEGV
    assert r["hangs"] == [3]
    assert r["accepted"] + r["rejected"] == 4


def test_mutations_keep_the_checksums_valid():
    """The fuzz run exercises the structure checks, not the CRCs: a mutated file
    whose header describes a bounded file has matching CRCs."""
    import ibp_gnn

    data = (DATA / "v2_float32_groups.ibp").read_bytes()
    f, s = parse(data)
    assert build(f, s) == data  # parse/build round trip is exact
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        out, what = mutate(data, rng)
        g = dict(zip(NAMES, struct.unpack(HEADER, out[:128])))
        lay = layout(g)
        if lay is None or lay["total"] != len(out):
            continue
        sec = {k: out[v[0]:v[0] + v[1]] for k, v in lay.items() if k != "total"}
        assert zlib.crc32(sec["payload"]) == g["crc_payload"], what
        assert zlib.crc32(sec["rel"], zlib.crc32(sec["bases"])) == g["crc_index"], what
        checked += 1
    assert checked > 100
    assert ibp_gnn.FormatError  # the loader's error type the run expects


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
