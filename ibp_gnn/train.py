"""``from ibp_gnn.train import train`` and ``python -m ibp_gnn.train [overrides]``
(the same app as ``ibp-gnn-train``); the code lives in :mod:`ibp_gnn.training`."""
from .training import *  # noqa: F401,F403
from .training import __all__ as _all
from .training import _have_pyg_sampler, main  # noqa: F401
from .training.distributed import _Dist, _resolve_device, _setup_distributed  # noqa: F401
from .training.loop import _batches, _evaluate, _Loaders, _Stats  # noqa: F401

__all__ = list(_all)

if __name__ == "__main__":
    main()
