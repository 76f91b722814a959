"""Format version 3: kCoded rows (plain bits + ranked unary codes of each
unit's exponent, no participation bitmap), bit for bit against the source
and against the pure-Python reference (tests/reference.py)."""
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
FLOATS = [torch.float32, torch.float16, torch.bfloat16]
CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def embeddings(dtype, rows, cols, seed=0, specials=0.03):
    """Embedding-like rows (gaussian, full mantissas) with a share of the
    dtype's awkward values (NaN payloads, -0.0, Inf, denormals, zeros)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, cols, generator=g) * 0.2).to(dtype)
    sp = special_matrix(dtype, rows, cols, seed=seed + 1)
    return torch.where(torch.rand(rows, cols, generator=g) < specials, sp, x).contiguous()


def rows_of(ct):
    return ct.stats()["rows_per_mode"]


def test_version_is_3_or_later():
    assert ibp_gnn.FORMAT_VERSION == ref.FORMAT_VERSION >= 3
    assert _C.HEADER_BYTES == 128


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows,cols", [(0, 5), (1, 1), (1, 77), (700, 3), (900, 41)])
def test_bit_exact_every_dtype_and_shape(dtype, rows, cols):
    x = embeddings(dtype, rows, cols, seed=cols) if dtype in FLOATS else \
        special_matrix(dtype, rows, cols, seed=cols)
    ct = ibp_gnn.compress(x)
    assert ct.format_version == ibp_gnn.FORMAT_VERSION
    assert_bits_equal(ct.decompress(), x)
    if rows:
        ids = torch.randint(0, rows, (97,), generator=torch.Generator().manual_seed(rows))
        assert_bits_equal(ct.gather(ids), x[ids])
        for kernel in (1, 2) if _C.cpu_has_bmi2() else (1,):  # portable, BMI2
            out = np.zeros((len(ids), cols * x.element_size()), np.uint8)
            _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload,
                      ids.numpy(), out, 1, kernel)
            assert np.array_equal(out, x[ids].contiguous().view(torch.uint8).reshape(len(ids), -1).numpy())
    coded = rows_of(ct).get("coded", 0)
    if dtype in FLOATS and rows >= 900:
        assert coded > rows // 2
    if dtype not in FLOATS:
        assert coded == 0 and ct._tables.shape[1] == 2


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_reference_decodes_and_encodes_coded_rows(dtype):
    n = 400 if dtype == torch.float32 else 1200  # enough rows to pay for the code rows
    x = embeddings(dtype, n, 9, seed=5)
    ct = ibp_gnn.compress(x)
    f = ct._fields
    assert f["code_rows"] == (16 if dtype != torch.float32 else 8) and f["mode_rows"][3] > 0
    words = ref.to_words(x.view(ref_int(dtype)).numpy())
    ids = list(range(0, n, 3)) + [n - 1, 0, 0]
    got, infos = ref.decode_rows_ref(f, ct._tables, ct._bases, ct._rel, ct._payload, ids)
    assert np.array_equal(got, words[ids])
    assert ref.CODED in {i.mode for i in infos}
    # The reference encoder, given the same tables, writes the same bits.
    payload, bases, rel, modes = ref.encode_ref(words, ct._tables, allow_sparse=True)
    assert np.array_equal(payload, ct._payload) and np.array_equal(bases, ct._bases)
    assert np.array_equal(rel, ct._rel) and modes == tuple(f["mode_rows"])
    assert np.array_equal(ref.row_bits_ref(words[:50], ct._tables),
                          _C.Encoder(ct._fields["cols"] * x.element_size(), f["row_words"],
                                     ct._tables).row_bits(ref.to_bytes(x[:50].view(ref_int(dtype)).numpy()),
                                                          f["cols"] * x.element_size(), 1))


def ref_int(dtype):
    return {4: torch.int32, 2: torch.int16}[torch.empty(0, dtype=dtype).element_size()]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_select_codes_matches_reference(dtype):
    x = embeddings(dtype, 300, 5, seed=2, specials=0.2)  # odd: 2-byte rows end in padding
    xb = np.ascontiguousarray(x.view(torch.uint8).numpy().reshape(300, -1))
    words = ref.to_words(x.view(ref_int(dtype)).numpy())
    sample = np.arange(0, 300, 2, dtype=np.uint64)
    got = _C.select_codes(xb, xb.shape[1], words.shape[1], CODE[dtype], sample)
    assert np.array_equal(got, ref.select_codes_ref(words[sample.astype(np.int64)], CODE[dtype],
                                                   xb.shape[1]))
    assert _C.select_codes(xb, xb.shape[1], words.shape[1], 6, sample) is None  # int32
    # with a prior: a group of 40 rows, every row as the prior
    few, every = np.arange(3, 300, 7, dtype=np.uint64)[:40], np.arange(300, dtype=np.uint64)
    got = _C.select_codes(xb, xb.shape[1], words.shape[1], CODE[dtype], few, every)
    want = ref.select_codes_ref(words[few.astype(np.int64)], CODE[dtype], xb.shape[1],
                                prior=words)
    assert np.array_equal(got, want)
    assert not np.array_equal(want, ref.select_codes_ref(words[few.astype(np.int64)], CODE[dtype],
                                                         xb.shape[1]))  # the prior changed them


def _two_scales(rows, cols, seed):
    """float32 embedding rows of two scales 2^10 apart, interleaved: the groups
    split them, and each group's code rows rank its own exponents."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * 0.2
    x[1::2] *= 1024
    return x.contiguous()


def test_each_group_fits_its_codes_with_every_sample_row_as_the_prior(monkeypatch):
    # every group's code rows come from its own rows with the whole code
    # sample as the prior, as select_codes gets them
    x = _two_scales(20_000, 64, seed=3)
    calls, select = [], _C.select_codes

    def spy(rows, row_bytes, row_words, dtype, sample, prior=None):
        calls.append((len(rows), len(sample), prior))
        return select(rows, row_bytes, row_words, dtype, sample, prior)

    monkeypatch.setattr(_encode._C, "select_codes", spy)
    ct = ibp_gnn.compress(x, progress=False)
    groups = ct._tables.shape[0]
    assert groups > 1 and ct._tables.shape[1] > 2  # several groups, coded rows kept
    fits = [c for c in calls if c[2] is not None]
    assert len(fits) == groups
    for n, k, prior in fits:
        assert k < n and np.array_equal(prior, np.arange(n))
    assert_bits_equal(ct.decompress(), x)


def test_one_group_of_codes_when_the_groups_codes_do_not_pay(monkeypatch):
    # papers-like embeddings: the mask tables' groups, each with code rows
    # fitted to its share of the sample, lose to one group's code rows fitted
    # to all of it; compress keeps the smaller
    from ibp_gnn.datasets import SyntheticPapers

    sp = SyntheticPapers("/nonexistent", scale=0.001)
    y = np.random.default_rng(3).integers(0, 172, 20_000)
    x = torch.from_numpy(np.ascontiguousarray(sp._features(0, 0, 20_000, y, sp._feature_model())))
    ct = ibp_gnn.compress(x, progress=False)
    assert ct._tables.shape[0] == 1 and ct._tables.shape[1] > 2
    with_codes = _encode._with_codes
    monkeypatch.setattr(_encode, "_with_codes", lambda *a: with_codes(*a[:7]))  # no `one`
    groups = ibp_gnn.compress(x, progress=False)
    assert groups._tables.shape[0] > 1
    assert ct._payload.nbytes + ct._tables.nbytes <= groups._payload.nbytes + groups._tables.nbytes
    assert_bits_equal(ct.decompress(), x)


def test_select_codes_prior_ranks_the_tails_a_group_missed():
    # A group that saw only the 3 commonest exponents of a column still ranks
    # the rarer ones its prior saw (instead of leaving them escapes), in the
    # prior's order after its own.
    e = np.array([127] * 6 + [126] * 3 + [125] * 2 + [124] * 1 + [123, 122], np.uint32)
    x = torch.from_numpy((e << 23).view(np.float32).reshape(-1, 1).copy())
    xb = np.ascontiguousarray(x.view(torch.uint8).numpy().reshape(len(e), -1))
    group = np.arange(11, dtype=np.uint64)
    alone = _C.select_codes(xb, 4, 1, CODE[torch.float32], group)
    with_prior = _C.select_codes(xb, 4, 1, CODE[torch.float32], group,
                                 np.arange(len(e), dtype=np.uint64))
    slots = lambda c: [int(c[k // 2, 0]) >> (16 * (k % 2)) & 0xFFFF for k in range(16)]
    assert slots(alone)[0] & 15 == 3 and slots(alone)[1:4] == [127, 126, 125]
    s = slots(with_prior)[0] & 15
    assert s == 6 and slots(with_prior)[1:7] == [127, 126, 125, 122, 123, 124]  # ties by value
    with pytest.raises(ValueError, match="prior id out of range"):
        _C.select_codes(xb, 4, 1, CODE[torch.float32], group, np.array([99], np.uint64))


@pytest.mark.parametrize("path", sorted(DATA.glob("v3_*coded*.ibp")), ids=lambda p: p.stem)
def test_frozen_v3_files_match_reference(path):
    f, tables, bases, rel, payload = ref.read_file_ref(path)
    assert f["version"] == 3 and f["code_rows"] and f["mode_rows"][3] > 0
    raw = np.load(path.with_suffix(".raw.npy"))
    words = ref.decode_ref(f, tables, bases, rel, payload, range(f["rows"]))
    got = words.view(np.uint8).reshape(f["rows"], -1)[:, :raw.shape[1]]
    assert np.array_equal(got, raw)


def test_v2_files_have_no_code_rows():
    for path in sorted(DATA.glob("v[12]_*.ibp")):
        f = ref.read_file_ref(path)[0]
        assert f["code_rows"] == 0 and f["mode_rows"][3] == 0


def _parts(ct):
    return ct._header, ct._tables.copy(), ct._bases, ct._rel, ct._payload.copy()


def _rebuild(header, tables, bases, rel, payload):
    return ibp_gnn.CompressedTensor(header, tables, bases, rel, payload, validate=True)


def test_corrupt_code_tables_and_rows_are_refused():
    x = embeddings(torch.float32, 500, 12, seed=7)
    ct = ibp_gnn.compress(x)
    assert rows_of(ct).get("coded", 0) > 0
    header, tables, bases, rel, payload = _parts(ct)
    _rebuild(header, tables, bases, rel, payload)  # intact: accepted
    bad = tables.copy()
    bad[0, 2, 3] = (int(bad[0, 2, 3]) & 0xFFFF0000) | (15 | 20 << 4 | 16 << 9)  # lo + nc > 32
    with pytest.raises(ibp_gnn.FormatError, match="code table"):
        _rebuild(header, bad, bases, rel, payload)
    bad = tables.copy()
    bad[0, 9, 0] |= 0xFFFF0000  # slot 15: past s, or a symbol wider than the field
    with pytest.raises(ibp_gnn.FormatError, match="code table"):
        _rebuild(header, bad, bases, rel, payload)
    # A coded row's codes flipped: its length no longer matches the index.
    r = int(np.flatnonzero([i.mode == ref.CODED for i in ref.decode_rows_ref(
        ct._fields, tables, bases, rel, payload, range(40))[1]])[0])
    start = int(bases[r // ct._fields["block_rows"]]) + int(rel[r])
    end = start + 2 + 12 * 24 + 4
    bad = payload.copy()
    for b in range(end, end + 12):
        bad[b // 32] ^= np.uint32(1 << (b % 32))
    with pytest.raises(ibp_gnn.FormatError, match="corrupt"):
        _rebuild(header, tables, bases, rel, bad)
    # Code rows are refused in a version-2 header, kCoded rows without code rows.
    f = dict(ct._fields, version=2)
    with pytest.raises(ibp_gnn.FormatError, match="code_rows"):
        _rebuild(_C.pack_header(f), tables, bases, rel, payload)
    f = dict(ct._fields, code_rows=0)
    with pytest.raises(ibp_gnn.FormatError):
        _rebuild(_C.pack_header(f), np.ascontiguousarray(tables[:, :2]), bases, rel, payload)


def test_code_rows_only_when_they_pay():
    """Rows that other encodings store better keep the version-2 tables: no
    code rows are stored for them (no table bytes for nothing)."""
    bow = (torch.rand(2000, 300, generator=torch.Generator().manual_seed(1)) < 0.02).float()
    ct = ibp_gnn.compress(bow)
    assert ct._fields["code_rows"] == 0 and ct._tables.shape[1] == 2


def test_save_load_and_mmap(tmp_path):
    x = embeddings(torch.float16, 800, 31, seed=3)
    ct = ibp_gnn.compress(x)
    assert rows_of(ct).get("coded", 0) > 0
    ct.save(tmp_path / "a.ibp")
    for mmap in (False, True):
        back = ibp_gnn.load(tmp_path / "a.ibp", mmap=mmap)
        assert back._fields["code_rows"] == 16
        assert_bits_equal(back.decompress(), x)
    np.save(tmp_path / "x.npy", x.view(torch.int16).numpy())
    ibp_gnn.compress_file(tmp_path / "x.npy", tmp_path / "b.ibp")
    assert (tmp_path / "b.ibp").read_bytes()[8:12] == ibp_gnn.FORMAT_VERSION.to_bytes(4, "little")


@pytest.mark.skipif(shared_dir() is None, reason="../shared/datasets is not present")
@pytest.mark.parametrize("name", SHARED_DATASETS)
def test_never_below_v2_on_shared_datasets(name, monkeypatch):
    x = torch.from_numpy(load_shared(name))[:1000].contiguous()
    v3 = ibp_gnn.compress(x)
    monkeypatch.setattr(_encode, "CODED_ROWS", False)
    v2 = ibp_gnn.compress(x)
    assert v3._fields["payload_bits"] <= v2._fields["payload_bits"]
    assert v3.nbytes <= v2.nbytes
    assert_bits_equal(v3.decompress(), x)


def test_random_damage_to_coded_rows_is_refused_or_exact():
    """Flipped payload bits of a kCoded tensor (no CRC to catch them): the
    structural check refuses the tensor, or every row still decodes to its own
    length (flipped plain bits only change values). Runs in a child process:
    a crash would fail the test, not pytest."""
    refused = refused_bit_flips("""
x = (torch.randn(300, 20, generator=torch.Generator().manual_seed(0)) * 0.2).contiguous()
ct = ibp_gnn.compress(x)
assert ct.stats()["rows_per_mode"].get("coded", 0) > 250
""", 150)
    assert refused > 10  # flips of code bits change a row's length
