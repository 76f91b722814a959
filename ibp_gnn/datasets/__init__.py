"""Datasets for training: a registry of sources (synthetic, synthetic-papers,
Planetoid, OGB, MAG240M, IGB, a user's npz file, folder or saved PyG Data), each prepared once
into a cache folder that every later run (and every sweep job) memory-maps.

A prepared dataset is a :class:`GraphData`: the graph as a memory-mapped CSC
(``csc_indptr.npy`` int64, ``csc_indices.npy`` int32 when the node ids allow),
built out of core with bounded memory (``csc.build_csc``); labels and splits
as tensors; the raw features as a memory-mappable :class:`FeatureSource` (an
.npy file, or a region of a file such as an uncompressed .npz member); and
:meth:`GraphData.compressed` giving the .ibp file of those features,
compressed on first use by ``ibp_gnn.compress_file`` in one streaming pass.

Modules, by concern: ``_cache`` (the cache folder's rules), ``features``
(feature sources and their streaming converters), ``csc`` (edge sources and
the out-of-core CSC build), ``base`` (GraphData, Dataset, the cache's
meta.json), ``synthetic``, ``papers`` (synthetic-papers in OGB's raw layout),
``ogb`` (OGB, MAG240M), ``files`` (Planetoid, IGB, npz, local folders), ``pt``
(a saved PyG Data).

Cache rules (``<cache>/<name>-<hash of the source options>/``):

* every file is written under a unique temporary name, fsynced and renamed
  when complete; ``meta.json`` is written last and lists the files with their
  sizes (and the identity of the source files used in place), so an
  interrupted preparation leaves nothing a later run trusts;
* long phases (feature unpack or parse, the CSC build) publish a phase marker
  keyed by their source's identity: a rerun after a kill resumes after the
  last completed phase;
* the .ibp file's name carries the codec's ``FORMAT_VERSION`` and mode, so a
  new codec version compresses again (older .ibp files are removed), and a
  sidecar records the identity of the features it was made from: a changed
  source is compressed again;
* a per-folder lock (``fcntl.flock``) makes concurrent jobs wait for one
  another instead of preparing the same data twice.
"""
from ._cache import (CACHE_VERSION, DEFAULT_MEMORY_BUDGET, SPLITS, DatasetError, file_identity,
                     memory_budget)
from .base import Dataset, GraphData
from .csc import (ArrayEdges, CSVEdges, EdgeSource, NpzEdges, build_csc, csc_reference,
                  index_dtype, npy_edges, open_csc)
from .features import FeatureSource
from .files import IGB, IGB_LABELED_FULL, IGB_NODES, NPZ, LocalFolder, Planetoid
from .ogb import MAG240M, OGBNodeDataset, ogb_meta
from .papers import PAPERS100M, SyntheticPapers
from .pt import PyGFile, load_pt
from .synthetic import FEATURE_KINDS, Synthetic

__all__ = ["CACHE_VERSION", "DEFAULT_MEMORY_BUDGET", "SPLITS", "DatasetError", "file_identity",
           "memory_budget", "Dataset", "GraphData", "ArrayEdges", "CSVEdges", "EdgeSource",
           "NpzEdges", "build_csc", "csc_reference", "index_dtype", "npy_edges", "open_csc",
           "FeatureSource", "IGB", "IGB_LABELED_FULL", "IGB_NODES", "NPZ", "LocalFolder",
           "Planetoid", "MAG240M", "OGBNodeDataset", "ogb_meta", "PAPERS100M",
           "SyntheticPapers", "FEATURE_KINDS", "Synthetic", "PyGFile", "load_pt"]
