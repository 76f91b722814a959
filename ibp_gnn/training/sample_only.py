"""``train.py +sample_only=true``: the training loader replayed without a
model, with the host-to-device bytes of every feature path per epoch
(counted in 32-byte sectors by ``ibp_gnn.cache``)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..cache import SECTOR, all_sum, caches_of, raw_sectors, span_sectors, staged_bytes
from .._tensor import CompressedTensor


def batch_bus_bytes(store, ids: np.ndarray) -> dict:
    """Host-to-device bytes of one batch's feature rows `ids` on each path the
    store offers (one launch each, distinct 32-byte sectors): raw UVA; for a
    compressed store IBP zero-copy and staged; with its cache, the cache's
    hits and its misses zero-copy and staged. Counts only; nothing is decoded."""
    ids = np.ascontiguousarray(np.asarray(ids, np.int64))
    row_bytes = store.raw_nbytes // max(1, store.shape[0])
    out = {"rows": len(ids), "raw_uva": SECTOR * raw_sectors(ids, row_bytes, distinct=True)}
    ct = getattr(store, "ct", None)
    if isinstance(ct, CompressedTensor):
        out["ibp_zero_copy"] = SECTOR * span_sectors(ct, ids, distinct=True)
        out["ibp_staged"] = staged_bytes(ct, ids)
    for cf in caches_of(store)[:1]:
        miss = ids[cf._slot.numpy()[ids] < 0]
        out["cache_hits"] = len(ids) - len(miss)
        out["ibp_cache_zero_copy"] = SECTOR * span_sectors(cf.ct, miss, distinct=True)
        out["ibp_cache_staged"] = staged_bytes(cf.ct, miss)
    return out


def sample_only(store, loader, *, epochs: int, limit: Optional[int] = None,
                log=None) -> dict:
    """Replays `loader` (the training loader, whose batches carry ``n_id``)
    for `epochs` epochs without a model and reports, per epoch, the bus bytes
    of :func:`batch_bus_bytes` summed over the batches (and over the ranks of
    torch.distributed when initialised), with ratios to raw UVA."""
    import logging
    import time

    log = log or logging.getLogger("ibp_gnn.train").info
    records = []
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        total: dict = {}
        steps = 0
        for batch in loader:
            if limit is not None and steps >= limit:
                break
            for k, v in batch_bus_bytes(store, batch.n_id.cpu().numpy()).items():
                total[k] = total.get(k, 0) + v
            steps += 1
        keys = sorted(total)
        rec = dict(zip(keys, all_sum([total[k] for k in keys])))
        rec.update(epoch=epoch, steps=int(all_sum([steps])[0]),
                   sample_s=time.perf_counter() - t)
        uva = rec.get("raw_uva", 0)
        for k in ("ibp_zero_copy", "ibp_staged", "ibp_cache_zero_copy", "ibp_cache_staged"):
            if k in rec and uva:
                rec[f"{k}_vs_raw"] = rec[k] / uva
        if "cache_hits" in rec:
            rec["cache_hit_rate"] = rec["cache_hits"] / max(1, rec["rows"])
        records.append(rec)
        log("epoch %d (sample only): %d batches, %d rows, bus bytes raw UVA %d%s", epoch,
            rec["steps"], rec["rows"], uva,
            "".join(f", {k} {rec[k]} ({rec[k + '_vs_raw']:.3f}x)" for k in
                    ("ibp_zero_copy", "ibp_staged", "ibp_cache_zero_copy", "ibp_cache_staged")
                    if k + "_vs_raw" in rec))
    info = store.describe() if callable(getattr(store, "describe", None)) else {}
    return {"sample_only": True, "epochs": records, "store_info": info}
