"""The model file: one self-describing file with everything needed to map a new grid.

It holds the weights, the architecture, the channel names and order, the fitted transform, the
window size and padding, the training config and the package versions. It is written with
``torch.save`` as a dict of tensors and one JSON string, and read with
``torch.load(weights_only=True)``, so loading never unpickles code.

A file may hold several **members** (a seed ensemble, ``gkdcn train --seeds N``): networks of one
architecture, channel list, window and padding, each with its own weights, transform and record.
The first member is the bundle itself; the others are in :attr:`ModelBundle.others`, and
:attr:`ModelBundle.members` lists them all. ``predict`` averages the members' probabilities;
commands that need one network (``explain``) use the first member and say so.
"""

from __future__ import annotations

import json
import platform
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import torch

from gkdcn.config import MAX_WIDTH, MAX_WINDOW
from gkdcn.data.samples import Padding
from gkdcn.data.transforms import ChannelTransform
from gkdcn.errors import GkdcnError, InputError, Note
from gkdcn.io.atomic import atomic_path
from gkdcn.io.grid import Grid
from gkdcn.io.rasters import is_georeferenced
from gkdcn.models.nets import AnomalyNet, ModelSpec, build_network

FORMAT = "gkdcn-model"
# Version 2: some channels are not compositional (only scaled, outside the log-ratio). A model
# without such channels is still written as version 1, which older gkdcn versions read; they
# refuse a version 2 file ("written by a newer gkdcn") instead of log-ratioing its knowledge or
# auxiliary channels with the elements. Version 3: several members (a seed ensemble); a
# single-member file keeps version 1 or 2, so older gkdcn versions refuse only ensembles, which
# they would otherwise map with the first member alone.
FORMAT_VERSION = 3
_MULTI_MEMBER_VERSION = 3


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
    #: Further members of a seed ensemble (same spec, channels and padding), without others.
    others: list[ModelBundle] = field(default_factory=list)

    @property
    def members(self) -> list[ModelBundle]:
        """Every member: this bundle's own network first (one for a single model)."""
        if not self.others:
            return [self]
        return [replace(self, others=[]), *self.others]

    @classmethod
    def ensemble(cls, bundles: list[ModelBundle]) -> ModelBundle:
        """One bundle holding ``bundles`` as members (e.g. the seeds of one model).

        They must share architecture, channels (same order) and padding; a one-line error
        otherwise. The ensemble's ``info`` is the first member's plus ``members`` and ``seeds``.
        """
        flat = [m for b in bundles for m in b.members]
        if not flat:
            raise GkdcnError("an ensemble needs at least one model")
        first = flat[0]
        for i, other in enumerate(flat[1:], start=2):
            if (
                other.spec.to_dict() != first.spec.to_dict()
                or other.channels != first.channels
                or other.padding != first.padding
            ):
                raise GkdcnError(
                    f"member {i} differs from member 1 in architecture, channels or padding "
                    "(an ensemble file needs the same for every member)"
                )
        if len(flat) == 1:
            return first
        seeds = [m.train_config.get("seed") for m in flat]
        info = {**first.info, "members": len(flat), "seeds": seeds}
        return replace(first, info=info, others=[replace(m, others=[]) for m in flat[1:]])

    @property
    def window(self) -> int:
        return self.spec.window

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def cell_size(self) -> tuple[float, float] | None:
        """Cell width and height of the grid the model was trained on (map units), or None for
        a model file that does not record it (written before gkdcn recorded it)."""
        size = self.info.get("cell_size")
        if not isinstance(size, list | tuple) or len(size) != 2:
            return None
        return float(size[0]), float(size[1])

    @property
    def georeferenced(self) -> bool | None:
        """Whether the training grid had a CRS or a geotransform (None: not recorded)."""
        value = self.info.get("georeferenced")
        return value if isinstance(value, bool) else None

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
        members = self.members
        if len(members) > 1:
            version = _MULTI_MEMBER_VERSION
        else:
            version = 1 if all(m.transform.all_compositional for m in members) else 2
        meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": version,
            "spec": self.spec.to_dict(),
            "channels": list(self.channels),
            "transform": self.transform.to_dict(),
            "padding": self.padding,
            "train_config": self.train_config,
            "info": self.info,
        }
        if self.others:
            meta["members"] = [
                {"transform": m.transform.to_dict(), "train_config": m.train_config, "info": m.info}
                for m in self.others
            ]
        return meta

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model file atomically (every member in the one file)."""
        path = Path(path)
        payload: dict[str, Any] = {
            "meta": json.dumps(self.metadata()),
            "state": _cpu_state(self.state),
        }
        if self.others:
            payload["members"] = [_cpu_state(m.state) for m in self.others]
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
            member_states = list(payload.get("members", []))
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
            records = list(meta.get("members", []))
            if len(records) != len(member_states):
                raise ValueError(
                    f"{len(records)} member records but {len(member_states)} member weights"
                )
            bundle.others = [
                replace(
                    bundle,
                    state=dict(member_state),
                    transform=ChannelTransform.from_dict(record["transform"]),
                    train_config=record.get("train_config", {}),
                    info=record.get("info", {}),
                    others=[],
                )
                for record, member_state in zip(records, member_states, strict=True)
            ]
            for member in bundle.members:
                if member.transform.n_channels != len(member.channels):
                    raise ValueError(
                        f"its transform has {member.transform.n_channels} channels, "
                        f"its channel list {len(member.channels)}"
                    )
                check_weights(member.spec, member.channels, member.state)
                build_network(member.spec).load_state_dict(member.state)
        except (KeyError, TypeError, ValueError, RuntimeError, GkdcnError) as exc:
            reason = _first_reason(exc)
            raise InputError(path, f"model file is incomplete or inconsistent ({reason})") from None
        bad = [
            name
            for member in bundle.members
            for name, value in member.state.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        ]
        if bad:  # a diverged training: every map from it would be nodata or nonsense
            raise InputError(
                path,
                f"model weights hold NaN or infinite values ({len(bad)} tensors, e.g. {bad[0]})",
            )
        return bundle


def grid_record(grid: Grid) -> dict[str, Any]:
    """What a model file's ``info`` records of its training grid, for ``predict`` to check the
    grid it maps: the cell size and whether the grid was georeferenced."""
    return {"cell_size": list(grid.cell_size), "georeferenced": is_georeferenced(grid)}


def check_weights(spec: ModelSpec, channels: list[str], state: dict[str, torch.Tensor]) -> None:
    """Refuse (``ValueError``) a spec that disagrees with the channel list or with the weights,
    before any network is built: the expected shapes come from the network built on torch's
    ``meta`` device, which allocates nothing, so an edited ``width = 6000`` costs no memory."""
    if len(set(channels)) != len(channels):
        twice = next(c for c in channels if channels.count(c) > 1)
        raise ValueError(f"channel {twice!r} is listed twice")
    if spec.in_channels != len(channels):
        raise ValueError(
            f"spec.in_channels is {spec.in_channels} but the file lists {len(channels)} channels"
        )
    if not 1 <= spec.width <= MAX_WIDTH or spec.window > MAX_WINDOW:
        raise ValueError(
            f"spec width {spec.width} / window {spec.window} beyond what gkdcn trains "
            f"(width 1-{MAX_WIDTH}, window up to {MAX_WINDOW})"
        )
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_network(spec).state_dict().items()}
    fields = f"kind {spec.kind}, in_channels {spec.in_channels}, width {spec.width}"
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(f"the weights lack {missing[0]}, which the spec ({fields}) needs")
    extra = [k for k in state if k not in expected]
    if extra:
        raise ValueError(f"the weights hold {extra[0]}, which the spec ({fields}) has no use for")
    for name, shape in expected.items():
        value = state[name]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"weight {name} is not a tensor")
        if tuple(value.shape) != shape:
            raise ValueError(
                f"weight {name} has shape {tuple(value.shape)}, the spec ({fields}) needs {shape}"
            )


def _first_reason(exc: BaseException) -> str:
    """The first line of an exception's message that says something, shortened to one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    if reason.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for ...:"
        reason = lines[1]
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
