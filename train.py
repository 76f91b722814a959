"""Command-line entry: `python train.py [overrides]` (see conf/train.yaml).

    python train.py                                     # synthetic graph, ~1 min on 2 CPU cores
    python train.py dataset=ogbn-papers100M model=gat   # download, convert, compress once; train
    python train.py -m model=sage,gat optim.lr=0.003,0.01
    python train.py -m hparams_search=optuna            # Bayesian sweep (hydra/sweeper=optuna)
    torchrun --nproc_per_node=2 train.py trainer.devices=2 hydra.run.dir=outputs/ddp
"""
from typing import Optional

import hydra
from omegaconf import DictConfig

from ibp_gnn.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> Optional[float]:
    metrics = train(cfg)
    # The value an Optuna sweep optimises.
    return metrics.get(cfg.get("optimized_metric") or "best_val_acc")


if __name__ == "__main__":
    main()
