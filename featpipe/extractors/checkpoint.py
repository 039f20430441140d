"""Extractors whose network is one published torch state-dict file (torchvision's checkpoints).

:class:`CheckpointExtractor` finds the file the way every featpipe weight file is found
(``--weights [NAME=]PATH``, ``$FEATPIPE_WEIGHTS``, ``~/.cache/featpipe/weights``, torch's hub
cache, a download where the network allows), checks its keys and shapes on the client, and
loads it with ``torch.load(weights_only=True)`` once per worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..models import weights as fw
from .base import ExtractOptions, Extractor, ExtractorError, WeightsError


class CheckpointExtractor(Extractor):
    """Base for an extractor built from ``build_network()`` and the state dict ``weights_file``."""

    preload = ("torch", "torchvision")  # what load() imports

    weights_file: ClassVar[str] = ""
    weights_url: ClassVar[str] = ""
    layout: ClassVar[str] = ""  # what the file holds, for error messages

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        if args:  # the network and its file are fixed: nothing to choose in the spec
            raise ExtractorError(f"bad spec {self.spec!r}: {self.name} takes no arguments")
        self._path: Path | None = None
        self._net: Any = None
        self._device = "cpu"

    @staticmethod
    def build_network() -> Any:
        """The torch module, randomly initialised, whose state dict ``weights_file`` holds."""
        raise NotImplementedError

    def _resolve(self) -> Path:
        return fw.find_weights(self.weights_file, explicit=self.weights_path, url=self.weights_url, spec=self.spec,
                               also=(fw.torch_hub_checkpoints(),))

    def check(self) -> None:
        from ..models.state_dict import StateDictError, check_file

        path = self._resolve()
        try:
            check_file(path, self.build_network, self.layout)
        except StateDictError as exc:
            raise WeightsError(f"{self.spec}: {exc}") from None
        self._path = path

    def weights_identity(self) -> str:
        return "sha256:" + fw.sha256_file(self._path or self._resolve())

    def load(self, device: str) -> None:
        import torch

        from ..models.state_dict import StateDictError, load_into

        try:
            net = load_into(self.build_network(), self._path or self._resolve(), self.layout)
        except StateDictError as exc:
            raise WeightsError(f"{self.spec}: {exc}") from None
        self._device = device
        self._net = net.to(torch.device(device))
