"""Defaults of ``gkdcn explain``.

Shared by :func:`gkdcn.explain.run.explain_model`, the command line and the report's reproduce
commands (which leave out any option at its default).
"""

from __future__ import annotations

from typing import Final

#: Sites explained: "deposits" or "all".
SITES: Final = "deposits"
#: Elements (by mean contribution at the deposits) that get whole-map attribution maps.
TOP_K: Final = 3
#: Integrated-gradient steps per cell for the whole-map attribution.
MAP_IG_STEPS: Final = 16
