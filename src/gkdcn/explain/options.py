"""The settings of one explanation, as one value handed to every step of :mod:`gkdcn.explain.run`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gkdcn.explain import defaults

#: Which sites to explain: the deposits, deposits and non-deposits, or the deposits plus the
#: user's own ``(id, row, col)`` points.
SiteChoice = Literal["deposits", "all"] | Sequence[tuple[str, int, int]]


@dataclass(frozen=True)
class ExplainOptions:
    """What to explain and how finely; the keyword arguments of :func:`~gkdcn.explain.run.explain_model`.

    Attributes
    ----------
    sites
        ``"deposits"``, ``"all"`` or a list of ``(id, row, col)`` points added to the deposits.
    layer
        The Grad-CAM layer (None: ``conv2``) and, when deformable, the only layer whose
        sampling is drawn (None: every deformable layer).
    element
        The element shown under the per-site CAMs and always mapped (None: the element
        contributing most at the deposits).
    top_k
        How many elements, by mean contribution at the deposits, get attribution maps.
    map_outputs
        Whether to do the whole-map work (GeoTIFFs, map offset statistics).
    ig_steps
        Integrated-gradient steps at the sites.
    map_ig_steps
        Integrated-gradient steps per cell for the attribution maps.
    map_sample
        Most cells used for the map offset statistics (None: all).
    seed
        Seed of the cells drawn for the map offset statistics.
    batch_size
        Windows per forward/backward pass.
    model_file
        Where the model was read from (recorded in the index), or None.
    """

    sites: SiteChoice = defaults.SITES
    layer: str | None = None
    element: str | None = None
    top_k: int = defaults.TOP_K
    map_outputs: bool = True
    ig_steps: int = 50
    map_ig_steps: int = defaults.MAP_IG_STEPS
    map_sample: int | None = 20000
    seed: int = 0
    batch_size: int = 256
    model_file: str | Path | None = None

    @property
    def cam_layer(self) -> str:
        """The layer Grad-CAM looks at (``layer``, or ``conv2`` when none is given)."""
        return self.layer or "conv2"

    def settings(self) -> dict[str, Any]:
        """The ``settings`` record of the index: what a report needs to give the command again.

        Returns
        -------
        dict
            ``sites`` (``"custom"`` for a list of points), ``layer``, ``element``, ``top_k``,
            ``map_outputs``, ``ig_steps`` and ``map_ig_steps``.
        """
        return {
            "sites": self.sites if isinstance(self.sites, str) else "custom",
            "layer": self.layer,
            "element": self.element,
            "top_k": self.top_k,
            "map_outputs": self.map_outputs,
            "ig_steps": self.ig_steps,
            "map_ig_steps": self.map_ig_steps,
        }
