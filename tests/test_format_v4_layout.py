"""Format version 4, row layout kSectors: a row that would touch one 32-byte
sector more than its length needs starts at the next sector boundary, a zero
gap of under a sector before it. Both decoders read rows from start(r), so
they are indifferent to it; validate() accepts such gaps only in kSectors files
and checks they are zero. Frozen files: tests/data/v4_layout_* (written by
tests/data/make_v4_layout.py)."""
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _C, _encode, cache

import reference as ref
from conftest import assert_bits_equal

DATA = Path(__file__).resolve().parent / "data"
LAYOUT_FILES = sorted(DATA.glob("v4_layout_*.ibp"))
SECTOR_BITS = 256


def _parts(ct):
    return ct._header, ct._tables, ct._bases.copy(), ct._rel.copy(), ct._payload.copy()


def _rebuild(header, tables, bases, rel, payload):
    return ibp_gnn.CompressedTensor(header, tables, bases, rel, payload, validate=True)


def _spans(ct):
    return ct._row_spans(np.arange(len(ct), dtype=np.int64))


def _row_ends(ct):
    """The bit after each row's own bits, parsed by the reference decoder
    (which also checks every gap is zero and under a sector)."""
    _, infos = ref.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload,
                                   range(len(ct)))
    return np.array([i.end for i in infos], np.int64)


def _raw7(n=100):
    """Rows of 7 random int32 words: every row raw, 2 + 7 * 32 = 226 bits."""
    g = torch.Generator().manual_seed(11)
    x = torch.randint(-2**31, 2**31 - 1, (n, 7), generator=g, dtype=torch.int64).to(torch.int32)
    return x


def test_version_is_4_and_the_header_holds_the_layout():
    assert ibp_gnn.FORMAT_VERSION == 4 == ref.FORMAT_VERSION
    assert _C.HEADER_BYTES == 128
    ct = ibp_gnn.compress(_raw7(), layout="sectors")
    assert ct._fields["layout"] == 1 and ct._fields["version"] == 4
    assert ibp_gnn.compress(_raw7(), layout="packed")._fields["layout"] == 0


@pytest.mark.parametrize("path", LAYOUT_FILES, ids=[p.stem for p in LAYOUT_FILES])
def test_frozen_layout_files(path):
    raw = np.load(path.with_suffix(".raw.npy"))
    ct = ibp_gnn.load(path)  # validated on load
    f = ct._fields
    assert f["version"] == 4 and f["layout"] == 1
    row_bytes = raw.shape[1]
    got = ct.decompress().contiguous().view(torch.uint8).reshape(len(ct), row_bytes).numpy()
    assert np.array_equal(got, raw)
    ids = np.arange(len(ct) - 1, -1, -3)
    for kernel in (1, 2) if _C.cpu_has_bmi2() else (1,):  # portable, BMI2
        out = np.zeros((len(ids), row_bytes), np.uint8)
        _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload, ids, out, 1,
                  kernel)
        assert np.array_equal(out, raw[ids]), kernel
    words = ref.decode_ref(f, ct._tables, ct._bases, ct._rel, ct._payload, range(len(ct)))
    assert np.array_equal(words.view(np.uint8)[:, :row_bytes], raw)
    # Each row sits where the layout rule puts it, given the rows before it.
    start, end = _spans(ct)
    own = _row_ends(ct)
    B, raw_bits = f["block_rows"], 2 + f["group_bits"] + 32 * f["row_words"]
    moved = 0
    for r in range(1, len(ct)):
        packed = int(own[r - 1])
        length = int(own[r] - start[r])
        base = int(ct._bases[r // B]) if r % B else packed
        want = ref.sector_start_ref(packed, length, r, B, base, f["rel_bytes"], raw_bits)
        assert start[r] == want, r
        moved += want > packed
        # Rows not moved touch no more sectors than their length needs.
        if want == packed:
            least = -(-length // SECTOR_BITS)
            assert (packed + length - 1) // SECTOR_BITS - packed // SECTOR_BITS + 1 == least
    assert moved > 0


def test_sector_counts_by_hand():
    """226-bit raw rows: packed, row r spans bits [226 r, 226 (r + 1)); with
    kSectors every row starts at 256 r and touches exactly one sector."""
    n = 100
    x = _raw7(n)
    sec = ibp_gnn.compress(x, layout="sectors", mode="paper")
    pk = ibp_gnn.compress(x, layout="packed", mode="paper")
    for ct in (sec, pk):
        assert ct._fields["mode_rows"] == (n, 0, 0, 0)
        assert ct._fields["block_rows"] == 64 and ct._fields["rel_bytes"] == 2
        assert_bits_equal(ct.decompress(), x)
    assert sec._fields["payload_bits"] == 256 * (n - 1) + 226
    assert np.array_equal(sec._rel, (256 * (np.arange(n) % 64)).astype(np.uint16))
    assert np.array_equal(sec._bases, np.array([0, 256 * 64, 256 * (n - 1) + 226], np.uint64))
    assert pk._fields["payload_bits"] == 226 * n
    ids = np.arange(n)
    r = np.arange(n)
    packed_each = int(((226 * r + 225) // 256 - 226 * r // 256 + 1).sum())
    assert cache.span_sectors(sec, ids) == n
    assert cache.span_sectors(pk, ids) == packed_each == 188
    assert cache.span_sectors(sec, ids, distinct=True) == n
    assert cache.span_sectors(pk, ids, distinct=True) == -(-226 * n // 256)
    some = np.array([3, 9, 10, 11, 57])
    assert cache.span_sectors(sec, some) == 5
    assert cache.span_sectors(pk, some) == sum(
        (226 * i + 225) // 256 - 226 * i // 256 + 1 for i in some.tolist())
    # fetch_nbytes counts the span the index gives (the gap included).
    assert sec.fetch_nbytes(torch.tensor([3])) == 32
    assert pk.fetch_nbytes(torch.tensor([3])) == (226 * 4 + 7) // 8 - 226 * 3 // 8


def test_validate_checks_gaps():
    ct = ibp_gnn.compress(_raw7(100), layout="sectors", mode="paper")
    header, tables, bases, rel, payload = _parts(ct)
    _rebuild(header, tables, bases, rel, payload)  # intact: accepted
    # A one bit in the gap after row 0 (bits 226..255).
    for b in (226, 240, 255):
        bad = payload.copy()
        bad[b // 32] ^= np.uint32(1 << (b % 32))
        with pytest.raises(ibp_gnn.FormatError, match="row 0 is corrupt"):
            _rebuild(header, tables, bases, rel, bad)
    # The same rows with gaps under a packed layout, or a v3 header.
    with pytest.raises(ibp_gnn.FormatError, match="exceeds the bound"):  # 256 bits a row
        _rebuild(_C.pack_header(dict(ct._fields, layout=0)), tables, bases, rel, payload)
    half = ibp_gnn.compress(_raw7(100)[:2], layout="sectors", mode="paper")  # one gap
    with pytest.raises(ibp_gnn.FormatError, match="row 0 is corrupt"):
        _rebuild(_C.pack_header(dict(half._fields, layout=0)), *_parts(half)[1:])
    with pytest.raises(ibp_gnn.FormatError, match="row layout"):
        _rebuild(_C.pack_header(dict(ct._fields, version=3)), tables, bases, rel, payload)
    with pytest.raises(ibp_gnn.FormatError, match="row layout 2"):
        _rebuild(_C.pack_header(dict(ct._fields, layout=2)), tables, bases, rel, payload)
    # A gap of a whole sector: row 1 moved 256 bits further, rows after it too.
    stream = int.from_bytes(payload.tobytes(), "little")
    low = stream & ((1 << 256) - 1)
    stream = ((stream >> 256) << 512) | low
    words = ct._fields["payload_bits"] + 256
    far = np.frombuffer(stream.to_bytes(4 * (len(payload) + 8), "little"), np.uint32)
    far = np.ascontiguousarray(far[:_C.payload_words(words)])
    rel_far = rel.copy()
    rel_far[1:64] += 256
    bases_far = bases.copy()
    bases_far[1:] += 256
    f = dict(ct._fields, payload_bits=words)
    with pytest.raises(ibp_gnn.FormatError, match="row 0 is corrupt"):
        _rebuild(_C.pack_header(f), tables, bases_far, rel_far, far)
    # A row longer than its span is still refused.
    short = rel.copy()
    short[5] -= 40
    with pytest.raises(ibp_gnn.FormatError, match="corrupt"):
        _rebuild(header, tables, bases, short, payload)


def test_layout_option():
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(9000, 64, generator=g) * 0.1
    bow = (torch.rand(9000, 100, generator=g) < 0.02).float()
    assert _encode.LAYOUT_AUTO_MIN_ROWS <= 9000
    assert ibp_gnn.compress(emb)._fields["layout"] == 1  # "auto": ~215-byte rows
    assert ibp_gnn.compress(emb[:4000])._fields["layout"] == 0  # a small table
    assert ibp_gnn.compress(bow)._fields["layout"] == 0  # rows of a few bytes
    for layout in ("sectors", "packed"):
        for x in (emb, bow):
            ct = ibp_gnn.compress(x, layout=layout)
            assert ct._fields["layout"] == (layout == "sectors")
            assert_bits_equal(ct.decompress(), x)
    with pytest.raises(ValueError, match="compress: layout must be one of"):
        ibp_gnn.compress(emb, layout="aligned")
    with pytest.raises(ValueError, match="layout must be 0"):
        _C.Encoder(4, 1, np.zeros((1, 2, 1), np.uint32), layout=2)


def test_compress_file_and_save_keep_the_layout(tmp_path):
    x = torch.randn(700, 40, generator=torch.Generator().manual_seed(4)) * 0.3
    np.save(tmp_path / "x.npy", x.numpy())
    ct = ibp_gnn.compress(x, layout="sectors")
    ct.save(tmp_path / "a.ibp")
    ibp_gnn.compress_file(tmp_path / "x.npy", tmp_path / "b.ibp", layout="sectors",
                          progress=False)
    assert (tmp_path / "a.ibp").read_bytes() == (tmp_path / "b.ibp").read_bytes()
    for mmap in (False, True):
        back = ibp_gnn.load(tmp_path / "b.ibp", mmap=mmap)
        assert back._fields["layout"] == 1
        assert_bits_equal(back.decompress(), x)


def test_subset_of_a_sectors_tensor():
    """A cache's subset copies each row's span, gap included: it validates
    (gaps under a sector, zero) and decodes bit for bit."""
    x = torch.randn(500, 100, generator=torch.Generator().manual_seed(5)) * 0.2
    ct = ibp_gnn.compress(x, layout="sectors")
    assert ct._fields["layout"] == 1
    rows = np.array([7, 3, 3, 499, 0, 250, 251, 252])
    sub = cache.subset(ct, rows, validate=True)
    assert_bits_equal(sub.decompress(), x[torch.from_numpy(rows)])
    cf = cache.CachedFeature(ct, np.arange(0, 500, 2), budget=ct.nbytes // 3)
    idx = torch.randint(0, 500, (300,), generator=torch.Generator().manual_seed(6))
    assert_bits_equal(cf.gather(idx), x[idx])


def test_store_layout(tmp_path):
    from ibp_gnn.stores import IBPStore

    x = torch.randn(600, 64, generator=torch.Generator().manual_seed(8)) * 0.1
    for layout, want in (("sectors", "sectors"), ("packed", "packed"), ("auto", "packed")):
        st = IBPStore(x, layout=layout)
        assert st.describe()["layout"] == want
        assert_bits_equal(st.gather(torch.tensor([5, 0, 599])), x[[5, 0, 599]])
    with pytest.raises(ValueError, match="store.layout must be one of"):
        IBPStore(x, layout="aligned")


def test_subset_leaves_the_gaps_out():
    """A subset of a kSectors tensor copies each row's own bits (no gap): the
    same payload as the subset of the packed tensor of the same rows."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(900, 48, generator=g) * 0.2
    x[::7] = torch.randint(-2**31, 2**31 - 1, (129, 48), generator=g,
                           dtype=torch.int64).to(torch.int32).view(torch.float32)  # raw rows
    sec, pk = ibp_gnn.compress(x, layout="sectors"), ibp_gnn.compress(x, layout="packed")
    assert sec._fields["payload_bits"] > pk._fields["payload_bits"]
    modes = sec.stats()["rows_per_mode"]
    assert modes.get("raw", 0) and (modes.get("coded", 0) or modes.get("ibp", 0))
    rows = np.array([5, 7, 7, 0, 899, 14, 3, 300, 301, 302, 303])
    a, b = cache.subset(sec, rows, validate=True), cache.subset(pk, rows)
    assert np.array_equal(a._payload, b._payload) and np.array_equal(a._rel, b._rel)
    assert_bits_equal(a.decompress(), x[torch.from_numpy(rows)])
    order = np.arange(900)[::-1].copy()
    assert np.array_equal(cache.subset_nbytes(sec, order), cache.subset_nbytes(pk, order))
    assert cache.staged_bytes(sec, rows) == cache.staged_bytes(pk, rows)
    cf = cache.CachedFeature(sec, order, budget=sec.nbytes // 4, transfer="staged")
    idx = torch.randint(0, 900, (400,), generator=g)
    assert_bits_equal(cf.gather(idx), x[idx])
    assert 0 < cf.hits < cf.requests
