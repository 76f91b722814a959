"""Command-line entry in a source checkout: `python train.py [overrides]` (see
conf/train.yaml); after `pip install` the same app is `ibp-gnn-train`.

    python train.py                                     # synthetic graph, ~1 min on 2 CPU cores
    python train.py dataset=ogbn-papers100M model=gat   # download, convert, compress once; train
    python train.py experiment=cora_sage                # a named experiment (conf/experiment)
    python train.py debug=fdr                           # one batch of each loop (conf/debug)
    python train.py trainer.ckpt_path=outputs/.../checkpoints/last.pt   # resume
    python train.py -m trainer.seed=0,1,2 && python -m ibp_gnn.report multirun/train/<time>
    python train.py -m hparams_search=optuna            # Bayesian sweep (hydra/sweeper=optuna)
    torchrun --nproc_per_node=2 train.py trainer.devices=2 hydra.run.dir=outputs/ddp
"""
from typing import Optional

import hydra
from omegaconf import DictConfig

from ibp_gnn.train import run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> Optional[float]:
    return run_task(cfg)  # train(cfg); a config error is one line on stderr


if __name__ == "__main__":
    main()
