"""Compatibility module: the datasets live in :mod:`ibp_gnn.datasets` (split by
concern); ``from ibp_gnn.data import ...`` keeps working for every public name
and the helpers earlier code imported from here."""
from .datasets import *  # noqa: F401,F403
from .datasets import __all__ as _all
from .datasets._cache import (_key, _locked, _read_cache, _remove_stale, _save_json,  # noqa: F401
                              _save_npy, _tmp)
from .datasets.base import _graph_from_cache, _labels, _split_random, _write_cache  # noqa: F401
from .datasets.csc import _undirected  # noqa: F401
from .datasets.features import (_csv_features, _npz_features, _npz_member,  # noqa: F401
                                _read_csv_gz)

__all__ = list(_all)
