"""The view ``IBPFeatureStore[group, attr]`` (``fs.tensor("x")``): PyG's
``AttrView`` that indexes like the tensor it names."""
from __future__ import annotations

import copy

import torch
from torch_geometric.data.feature_store import AttrView

from ._tensorlike import TensorLike


class FeatureView(TensorLike, AttrView):
    """``IBPFeatureStore[group, attr]``: PyG's ``AttrView``, which, once it names a
    stored tensor, indexes like it; rows are gathered (and counted) by the store."""

    _op_name = "IBPFeatureStore view"
    __getattr__ = AttrView.__getattr__  # store.view.attr sets the view's next field

    def _named(self) -> bool:
        a = self._attr
        return a.is_set("group_name") and a.is_set("attr_name") and not a.is_set("index")

    def _stored(self):
        if not self._named():
            raise AttributeError(f"{self._op_name}: {self._attr} does not name one stored "
                                 "tensor (give its group_name and attr_name)")
        return self._store._entry(self._attr, "view")

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._stored().shape)

    @property
    def dtype(self) -> torch.dtype:
        return self._stored().dtype

    @property
    def device(self) -> torch.device:
        return self._store.device

    def __getitem__(self, key):
        a = self._attr
        if not self._named() or (a.group_name, a.attr_name) not in self._store._entries:
            return AttrView.__getitem__(self, key)
        return TensorLike.__getitem__(self, key)

    def __len__(self) -> int:
        return int(self.shape[0])

    def _take(self, ids: torch.Tensor) -> torch.Tensor:
        return self._store.get_tensor(group_name=self._attr.group_name,
                                      attr_name=self._attr.attr_name, index=ids)

    def _on(self, device: torch.device) -> "FeatureView":
        return FeatureView(self._store.to(device), copy.copy(self._attr))
