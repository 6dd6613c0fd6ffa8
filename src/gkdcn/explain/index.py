"""The record of an explanation folder: the files written into it and ``index.json``.

Every step of :func:`gkdcn.explain.run.explain_model` writes through one :class:`OutputFiles`,
which lists each file with a one-line description; :func:`index_record` gathers that list, the
model, the settings and the sites into the index, and :func:`write_index` writes it last.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gkdcn.explain.attribution import IG_UNITS
from gkdcn.explain.gradcam import CAM_UNITS
from gkdcn.explain.layout import INDEX_FORMAT, ExplainLayout
from gkdcn.figures import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gkdcn.explain.options import ExplainOptions
    from gkdcn.models.bundle import ModelBundle

INDEX_VERSION = 1


def safe_name(text: str) -> str:
    """A file-name-safe version of a site id or element name (letters, digits, ``-``, ``_``, ``.``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._")
    return name or "site"


class OutputFiles:
    """The files written into one explanation folder, in the order they were written.

    Parameters
    ----------
    root
        The folder being built; every recorded path is listed relative to it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[dict[str, str]] = []

    def record(self, path: Path, description: str) -> str:
        """List ``path`` (already written under the root) with its description.

        Parameters
        ----------
        path
            The file, inside :attr:`root`.
        description
            One line saying what the file shows, with its units.

        Returns
        -------
        str
            The path relative to the root, in POSIX form (as the index lists it).
        """
        relative = path.relative_to(self.root).as_posix()
        self.files.append({"path": relative, "description": description})
        return relative

    def figure(self, fig: Figure, relative: str, description: str) -> str:
        """Save ``fig`` as PNG at ``relative`` under the root and list it.

        Parameters
        ----------
        fig
            The figure to save.
        relative
            Its path under the root (its folder must exist).
        description
            One line saying what the figure shows.

        Returns
        -------
        str
            The path as the index lists it.
        """
        path = self.root / relative
        save_figure(fig, path)
        return self.record(path, description)


def index_record(
    bundle: ModelBundle,
    options: ExplainOptions,
    *,
    sampling_layers: Sequence[str],
    element: str,
    ranking: Sequence[str],
    mapped: Sequence[str],
    sites: Sequence[dict[str, Any]],
    files: OutputFiles,
    notes: Sequence[str],
) -> dict[str, Any]:
    """The content of ``index.json``: what was explained, with which settings, and every file.

    Parameters
    ----------
    bundle
        The explained model (its kind, window, padding and channels are recorded).
    options
        The settings of the explanation.
    sampling_layers
        The deformable layers whose sampling was drawn.
    element
        The element shown under the per-site CAMs.
    ranking
        The elements by mean contribution at the deposits (or sites), largest first.
    mapped
        The elements given attribution maps (empty without map outputs).
    sites
        One record per explained site (id, label, row, col, x, y, files).
    files
        Every file written, with its description.
    notes
        Warnings about the explanation (e.g. loose integrated gradients).

    Returns
    -------
    dict
        The index, JSON-ready.
    """
    model_file = options.model_file
    return {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "model": {
            "kind": bundle.kind,
            "window": bundle.window,
            "padding": bundle.padding,
            "channels": list(bundle.channels),
        },
        # absolute: the report that reads it may run from another folder
        "model_file": None if model_file is None else str(Path(model_file).resolve()),
        "settings": options.settings(),
        "gradcam_layer": options.cam_layer,
        "sampling_layers": list(sampling_layers),
        "element": element,
        "element_chosen_by": "user" if options.element is not None else "top contribution",
        "element_ranking": list(ranking),
        "mapped_elements": list(mapped),
        "units": {
            "gradcam": f"{CAM_UNITS}, raw (not normalised per window)",
            "attribution": f"{IG_UNITS}, summed over the window",
            "offsets": "window cells",
        },
        "sites": list(sites),
        "files": files.files,
        "notes": list(notes),
    }


def write_index(root: Path, index: dict[str, Any]) -> Path:
    """Write ``index`` as ``index.json`` in ``root`` (the last file of an explanation folder).

    Parameters
    ----------
    root
        The folder being built.
    index
        The record from :func:`index_record`.

    Returns
    -------
    Path
        The file written.
    """
    path = root / ExplainLayout.INDEX
    path.write_text(json.dumps(index, indent=2), encoding="utf-8")
    return path
