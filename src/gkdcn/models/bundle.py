"""The model file: one self-describing file with everything needed to map a new grid.

It holds the weights, the architecture, the channel names and order, the fitted transform, the
window size and padding, the training config and the package versions. It is written with
``torch.save`` as a dict of tensors and one JSON string, and read with
``torch.load(weights_only=True)``, so loading never unpickles code.
"""

from __future__ import annotations

import json
import platform
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import torch

from gkdcn.data.samples import Padding
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError, InputError, Note
from gkdcn.io.atomic import atomic_path
from gkdcn.models.nets import AnomalyNet, ModelSpec, build_network

FORMAT = "gkdcn-model"
# Version 2: some channels are not compositional (only scaled, outside the log-ratio). A model
# without such channels is still written as version 1, which older gkdcn versions read; they
# refuse a version 2 file ("written by a newer gkdcn") instead of log-ratioing its knowledge or
# auxiliary channels with the elements.
FORMAT_VERSION = 2


def package_versions() -> dict[str, str]:
    """Versions worth recording next to any result."""
    import gkdcn

    return {
        "gkdcn": gkdcn.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _padding(value: object) -> Padding:
    """A model file's padding rule, refused (ValueError) when it is not one the window code knows."""
    if value not in get_args(Padding):
        raise ValueError(f"unknown padding {value!r} (expected one of {get_args(Padding)})")
    return cast(Padding, value)


@dataclass
class ModelBundle:
    """A trained network plus what it needs to be applied to a new map."""

    spec: ModelSpec
    state: dict[str, torch.Tensor]
    channels: list[str]
    transform: ChannelTransform
    padding: Padding = "zero"
    train_config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> int:
        return self.spec.window

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def channel_kinds(self) -> dict[str, str]:
        """Channel name -> ``"log-ratio"`` (compositional: goes through the transform's log /
        CLR step) or ``"scaled"`` (knowledge channel, auxiliary layer: only scaled)."""
        return {
            name: "log-ratio" if comp else "scaled"
            for name, comp in zip(self.channels, self.transform.compositional, strict=True)
        }

    def network(self, device: str | torch.device = "cpu") -> AnomalyNet:
        """The network with trained weights, in eval mode, on ``device``."""
        net = build_network(self.spec)
        net.load_state_dict(self.state)
        return net.to(device).eval()

    def channel_order(self, names: list[str], source: str | Path = "element layers") -> list[int]:
        """Indices into ``names`` giving this model's channel order.

        The one rule of every command: the model's channels are picked by name from a grid with
        more layers (a :class:`~gkdcn.errors.Note` names the unused ones); a missing layer is an
        :class:`InputError` naming it.
        """
        missing = [c for c in self.channels if c not in names]
        if missing:
            raise InputError(
                source,
                f"layers do not match the model's {len(self.channels)} channels: "
                f"missing layers {', '.join(missing)}",
            )
        extra = [n for n in names if n not in self.channels]
        if extra:
            warnings.warn(
                f"{source}: the model uses {len(self.channels)} of the {len(names)} layers; "
                f"{len(extra)} unused: {', '.join(extra)}",
                Note,
                stacklevel=2,
            )
        return [names.index(c) for c in self.channels]

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": 1 if self.transform.all_compositional else FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "channels": list(self.channels),
            "transform": self.transform.to_dict(),
            "padding": self.padding,
            "train_config": self.train_config,
            "info": self.info,
        }

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model file atomically."""
        path = Path(path)
        payload = {
            "meta": json.dumps(self.metadata()),
            "state": {k: v.detach().cpu().contiguous() for k, v in self.state.items()},
        }
        with atomic_path(path, overwrite) as tmp:
            try:
                torch.save(payload, tmp)
            except RuntimeError as exc:  # torch's stream writer reports a full disk this way
                reason = str(exc).splitlines()[0][:120]
                raise InputError(path, f"cannot write the model file ({reason})") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        """Read a model file; a missing, corrupt or foreign file is a one-line error."""
        path = Path(path)
        if not path.exists():
            raise InputError(path, "model file not found")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(payload["meta"])
            state = payload["state"]
        except Exception:  # torch raises many types for corrupt or foreign files
            raise InputError(
                path,
                "not a readable gkdcn model file (corrupt, truncated, or holding more than "
                "tensors and plain data)",
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(path, "not a gkdcn model file")
        version = meta.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise InputError(path, f"model file has an invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            raise InputError(path, "model file written by a newer gkdcn; upgrade to read it")
        try:
            bundle = cls(
                spec=ModelSpec.from_dict(meta["spec"]),
                state=dict(state),
                channels=list(meta["channels"]),
                transform=ChannelTransform.from_dict(meta["transform"]),
                padding=_padding(meta.get("padding", "zero")),
                train_config=meta.get("train_config", {}),
                info=meta.get("info", {}),
            )
            if bundle.transform.n_channels != len(bundle.channels):
                raise ValueError(
                    f"its transform has {bundle.transform.n_channels} channels, "
                    f"its channel list {len(bundle.channels)}"
                )
            build_network(bundle.spec).load_state_dict(bundle.state)
        except (KeyError, TypeError, ValueError, RuntimeError, GkdcnError) as exc:
            reason = str(exc).splitlines()[0][:120]
            raise InputError(path, f"model file is incomplete or inconsistent ({reason})") from None
        bad = [
            name
            for name, value in bundle.state.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        ]
        if bad:  # a diverged training: every map from it would be nodata or nonsense
            raise InputError(
                path,
                f"model weights hold NaN or infinite values ({len(bad)} tensors, e.g. {bad[0]})",
            )
        return bundle


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
