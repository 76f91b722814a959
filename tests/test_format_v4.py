"""Format version 4: coded-form kSparse rows (Rice-coded gaps, zigzag-unary
high bits, raw low bits; csrc/ibp/sparse_code.h), bit for bit against the
source and against the pure-Python reference (tests/reference.py)."""
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _C, _encode
from ibp_gnn.testing import SHARED_DATASETS, load_shared, refused_bit_flips, shared_dir

import reference as ref
from conftest import DTYPES, assert_bits_equal, special_matrix

DATA = Path(__file__).resolve().parent / "data"
INT_VIEW = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}


def sparse_rows(dtype, rows, cols, density=0.05, seed=0, specials=True):
    """Bag-of-words-like rows: a few nonzeros of full-mantissa values (or
    wide integers), with the dtype's awkward values (NaN payloads, -0.0, Inf,
    denormals) among the listed words of some rows."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(rows, cols, generator=g) < density
    if dtype.is_floating_point:
        vals = (torch.rand(rows, cols, generator=g) * 0.3).to(dtype)
    else:
        info = torch.iinfo(dtype)
        vals = torch.randint(max(info.min, -2**40), min(info.max, 2**40), (rows, cols),
                             generator=g, dtype=torch.int64).to(dtype)
    x = torch.where(keep, vals, torch.zeros((), dtype=dtype))
    if specials and rows and cols:
        sp = special_matrix(dtype, rows, cols, seed=seed + 1)
        pick = torch.rand(rows, cols, generator=g) < 0.01
        if dtype.is_floating_point:
            f = sp.float()
            pick |= ~torch.isfinite(f) | (f.abs() < torch.finfo(dtype).tiny) & (sp != 0)
            pick |= (f == 0) & torch.signbit(f) | (f.abs() == torch.finfo(dtype).max)
        else:
            pick |= (sp == torch.iinfo(dtype).max) | (sp == torch.iinfo(dtype).min)
        x = torch.where(pick, sp, x)
    return x.contiguous()


def words_of(x):
    return ref.to_words(x.view(INT_VIEW[x.element_size()]).numpy())


def code_rows_in(ct, ids=None):
    ids = range(ct.shape[0]) if ids is None else ids
    infos = ref.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload, ids)[1]
    return sum(i.mode == ref.SPARSE and i.dict == i.count + 1 for i in infos)


def test_version_is_4():
    assert ibp_gnn.FORMAT_VERSION == 4 == ref.FORMAT_VERSION
    assert _C.HEADER_BYTES == 128


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows,cols", [(0, 5), (1, 1), (1, 301), (40, 77), (60, 300)])
def test_bit_exact_every_dtype_and_shape(dtype, rows, cols):
    x = sparse_rows(dtype, rows, cols, seed=cols)
    ct = ibp_gnn.compress(x)
    assert ct.format_version == 4
    assert_bits_equal(ct.decompress(), x)
    if rows:
        ids = torch.randint(0, rows, (53,), generator=torch.Generator().manual_seed(rows))
        assert_bits_equal(ct.gather(ids), x[ids])
        for kernel in (1, 2) if _C.cpu_has_bmi2() else (1,):  # portable, BMI2
            out = np.zeros((len(ids), cols * x.element_size()), np.uint8)
            _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload,
                      ids.numpy(), out, 1, kernel)
            assert np.array_equal(out, x[ids].contiguous().view(torch.uint8).reshape(len(ids), -1).numpy())
    if rows >= 60 and cols >= 300:  # ~15 listed words a row
        assert code_rows_in(ct) > (rows // 2 if dtype.is_floating_point else 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cols", [1, 33, 301])
def test_encoder_matches_reference(dtype, cols):
    """The C++ encoder writes the reference's bits, given the same tables;
    the reference decodes them; row_bits agrees."""
    x = sparse_rows(dtype, 40, cols, seed=7 + cols)
    ct = ibp_gnn.compress(x)
    f = ct._fields
    words = words_of(x)
    got = ref.decode_ref(f, ct._tables, ct._bases, ct._rel, ct._payload, range(len(x)))
    assert np.array_equal(got, words)
    payload, bases, rel, modes = ref.encode_ref(words, ct._tables, allow_sparse=True)
    assert np.array_equal(payload, ct._payload) and np.array_equal(bases, ct._bases)
    assert np.array_equal(rel, ct._rel) and modes == tuple(f["mode_rows"])
    row_bytes = cols * x.element_size()
    xb = ref.to_bytes(x.view(INT_VIEW[x.element_size()]).numpy())
    assert np.array_equal(ref.row_bits_ref(words, ct._tables),
                          _C.Encoder(row_bytes, f["row_words"], ct._tables).row_bits(xb, row_bytes, 1))
    assert np.array_equal(ref.row_bits_ref(words, ct._tables, sparse_code=False),
                          _C.Encoder(row_bytes, f["row_words"], ct._tables,
                                     sparse_code=False).row_bits(xb, row_bytes, 1))


def test_reference_plan_edges():
    """Unary gap quotients over 32 bits (40 adjacent words, then one at the
    far end), escaped high bits (exponents far from the row's median), a
    listed word at each end, and a row whose coded form loses (one word)."""
    W = 2000
    w = np.zeros((3, W), np.uint32)
    w[0, list(range(40)) + [W - 1]] = 0x3DCCCCCD + np.arange(41) * 7919
    w[1, ::50] = 0x3E000000 + np.arange(40) * 104729
    w[1, [3, 7]] = [0x00000001, 0xFF800001]  # exponents 0 and 255
    w[2, 100] = 0x7FC00001
    tables = ref.make_tables((np.full(W, ref.FULL, np.uint32), np.zeros(W, np.uint32)))
    payload, bases, rel, modes = ref.encode_ref(w, tables, allow_sparse=True)
    enc = _C.Encoder(4 * W, W, tables)
    cw, cr, cb = enc.encode(ref.to_bytes(w), 4 * W, 1)
    tail, last = enc.finish()
    assert np.array_equal(np.concatenate([cw, tail]), payload)
    assert np.array_equal(np.concatenate([cb, last]), bases)
    plans = [ref.choose_mode(w[r], tables, allow_sparse=True)[3] for r in range(3)]
    assert isinstance(plans[0], ref.SparseCodePlan) and (W - 41) >> plans[0].rice > 32
    assert isinstance(plans[1], ref.SparseCodePlan) and plans[1].hi >= 9  # t = 0 below: escaped
    assert ref.zigzag_ref(0, plans[1].base) >= ref.SPARSE_ESCAPE
    assert isinstance(plans[2], ref.SparsePlan)
    got = ref.decode_ref(dict(rows=3, row_words=W, num_groups=1, group_bits=0,
                              block_rows=enc.block_rows, rel_bytes=enc.rel_bytes), tables,
                         bases, np.frombuffer(cr.tobytes(), np.uint16 if enc.rel_bytes == 2
                                              else np.uint32), payload, range(3))
    assert np.array_equal(got, w)


def test_frozen_v4_files_have_coded_sparse_rows():
    paths = sorted(DATA.glob("v4_sparse*.ibp"))
    assert len(paths) >= 5
    for path in paths:
        f, tables, bases, rel, payload = ref.read_file_ref(path)
        assert f["version"] == 4
        raw = np.load(path.with_suffix(".raw.npy"))
        words, infos = ref.decode_rows_ref(f, tables, bases, rel, payload, range(f["rows"]))
        assert np.array_equal(words.view(np.uint8).reshape(f["rows"], -1)[:, :raw.shape[1]], raw)
        assert sum(i.mode == ref.SPARSE and i.dict == i.count + 1 for i in infos) > f["rows"] // 2
        ct = ibp_gnn.load(path)
        assert np.array_equal(ct.decompress().contiguous().view(torch.uint8).numpy().reshape(raw.shape), raw)


def test_v3_files_have_no_coded_sparse_rows():
    for path in sorted(DATA.glob("v[23]_*.ibp")):
        f, tables, bases, rel, payload = ref.read_file_ref(path)
        if f["rows"]:
            infos = ref.decode_rows_ref(f, tables, bases, rel, payload, range(f["rows"]))[1]
            assert not any(i.mode == ref.SPARSE and i.dict > i.count for i in infos)


def _parts(ct):
    return ct._header, ct._tables, ct._bases, ct._rel, ct._payload.copy()


def _rebuild(header, tables, bases, rel, payload):
    return ibp_gnn.CompressedTensor(header, tables, bases, rel, payload, validate=True)


def _coded_row(ct):
    infos = ref.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload,
                                range(ct.shape[0]))[1]
    r = next(r for r, i in enumerate(infos) if i.mode == ref.SPARSE and i.dict == i.count + 1)
    start = int(ct._bases[r // ct._fields["block_rows"]]) + int(ct._rel[r])
    return r, start + 2 + ct._fields["group_bits"]


def _set_bits(payload, at, k, v):
    for b in range(k):
        bit = np.uint32(1 << ((at + b) % 32))
        if (v >> b) & 1:
            payload[(at + b) // 32] |= bit
        else:
            payload[(at + b) // 32] &= ~bit


def test_corrupt_coded_sparse_rows_are_refused():
    x = sparse_rows(torch.float32, 60, 300, seed=3)
    ct = ibp_gnn.compress(x)
    header, tables, bases, rel, payload = _parts(ct)
    _rebuild(header, tables, bases, rel, payload)  # intact: accepted
    r, pos = _coded_row(ct)
    cb = ref.count_bits(ct._fields["row_words"])
    c = ref.BitReader(payload).read(pos, cb)
    cases = {
        "d = c + 2": (pos + cb, cb, c + 2),
        "form 1": (pos + 2 * cb, 1, 1),
        "rice 31": (pos + 2 * cb + 1, 5, 31),  # gaps shift past the row
        "h 0": (pos + 2 * cb + 6, 5, 0),       # the row's length no longer matches
        "c larger": (pos, cb, c + 5),
    }
    for what, (at, k, v) in cases.items():
        bad = payload.copy()
        if what == "c larger":
            _set_bits(bad, pos + cb, cb, c + 6)
        _set_bits(bad, at, k, v)
        with pytest.raises(ibp_gnn.FormatError, match="corrupt"):
            _rebuild(header, tables, bases, rel, bad)
    # A first gap of all ones: positions past the row.
    bad = payload.copy()
    body = pos + 2 * cb + 11 + ref.BitReader(payload).read(pos + 2 * cb + 6, 5)
    _set_bits(bad, body, 32, 0xFFFFFFFF)
    with pytest.raises(ibp_gnn.FormatError, match="corrupt"):
        _rebuild(header, tables, bases, rel, bad)
    # A version-3 header does not admit the coded form (d > c).
    with pytest.raises(ibp_gnn.FormatError, match="corrupt"):
        _rebuild(_C.pack_header(dict(ct._fields, version=3)), tables, bases, rel, payload)


def test_random_damage_to_coded_sparse_rows_is_refused_or_exact():
    """Flipped payload bits of a coded-form tensor: the structural check
    refuses it, or every row still decodes. In a child process: a crash fails
    the test, not pytest."""
    refused = refused_bit_flips("""
g = torch.Generator().manual_seed(0)
x = ((torch.rand(200, 300, generator=g) < 0.05) * torch.rand(200, 300, generator=g)).contiguous()
ct = ibp_gnn.compress(x)
""", 200)
    assert refused > 50  # most flips hit gaps and high codes


def test_save_load_and_compress_file(tmp_path):
    x = sparse_rows(torch.float16, 90, 301, seed=4)
    ct = ibp_gnn.compress(x)
    assert code_rows_in(ct) > 45
    ct.save(tmp_path / "a.ibp")
    for mmap in (False, True):
        assert_bits_equal(ibp_gnn.load(tmp_path / "a.ibp", mmap=mmap).decompress(), x)
    np.save(tmp_path / "x.npy", x.view(torch.int16).numpy())
    ibp_gnn.compress_file(tmp_path / "x.npy", tmp_path / "b.ibp")
    assert (tmp_path / "b.ibp").read_bytes()[8:12] == (4).to_bytes(4, "little")


@pytest.mark.skipif(shared_dir() is None, reason="../shared/datasets is not present")
@pytest.mark.parametrize("name", SHARED_DATASETS)
def test_never_below_v3_on_shared_datasets(name, monkeypatch):
    x = torch.from_numpy(load_shared(name))[:1000].contiguous()
    v4 = ibp_gnn.compress(x)
    monkeypatch.setattr(_encode, "SPARSE_CODE", False)
    v3 = ibp_gnn.compress(x)
    assert v4._fields["payload_bits"] <= v3._fields["payload_bits"]
    assert v4.nbytes <= v3.nbytes
    assert_bits_equal(v4.decompress(), x)


@pytest.mark.skipif(shared_dir() is None, reason="../shared/datasets is not present")
def test_cora_ml_payload_is_a_fiftieth_of_raw():
    """cora_ml's TF-IDF rows (~50 distinct fp32 values a row): the payload
    is at most 1/50 of the raw bytes (version 3: 1/41)."""
    x = torch.from_numpy(load_shared("cora_ml"))
    ct = ibp_gnn.compress(x)
    raw_bits = 32 * x.numel()
    assert ct._fields["payload_bits"] * 50 <= raw_bits
    assert code_rows_in(ct, range(0, x.shape[0], 97)) == len(range(0, x.shape[0], 97))
    ids = torch.randint(0, len(x), (300,), generator=torch.Generator().manual_seed(0))
    assert_bits_equal(ct.gather(ids), x[ids])
