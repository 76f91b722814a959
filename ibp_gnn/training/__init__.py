"""The training app: node classification with sampled mini-batches whose
features come from a feature store (IBP-compressed or raw), driven by a Hydra
config (``conf/train.yaml``, shipped inside the package as ``ibp_gnn/conf``).
Entry points: ``ibp-gnn-train``, ``python -m ibp_gnn.train`` and, in a source
checkout, ``python train.py``; ``from ibp_gnn.train import train`` in code.

Per epoch it logs the loss, train/val accuracy, the learning rate, the epoch
time, the time the loop waited for features, the bytes read from host memory
and the store's ratio; the best-val weights (``best.pt``) give the final test
accuracy, and ``last.pt`` resumes an interrupted run exactly. Under torchrun
each process trains on its share of the training nodes with
DistributedDataParallel (gloo on CPU, nccl on GPU), and every process of a
node memory-maps the same cached feature file: the OS page cache holds the one
shared copy.

Modules, by concern: ``specs`` (config specs, ConfigError), ``validate``,
``loggers``, ``distributed``, ``loop`` (batches, loaders, evaluation),
``checkpoint`` (best/last files, random states), ``run`` (``train(cfg)``),
``app`` (the command line: config folder, one-line config errors).
"""
from .app import conf_dir, main, run_task
from .checkpoint import CHECKPOINT_VERSION
from .loggers import CSVLogger, TensorBoardLogger
from .run import train
from .specs import AMP_MODES, BACKENDS, CODEC_MODES, SAMPLERS, ConfigError, LoaderSpec, TrainerSpec
from .validate import _have_pyg_sampler, validate

__all__ = ["AMP_MODES", "BACKENDS", "CHECKPOINT_VERSION", "CODEC_MODES", "CSVLogger",
           "ConfigError", "LoaderSpec", "SAMPLERS", "TensorBoardLogger", "TrainerSpec",
           "conf_dir", "main", "run_task", "train", "validate", "_have_pyg_sampler"]
