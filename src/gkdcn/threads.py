"""The process settings of :mod:`gkdcn.runtime`, under their former module name.

``set_threads``, ``torch_threads`` and ``reuse_freed_memory`` live in :mod:`gkdcn.runtime` (with
the device and the training precision); this module re-exports them for code that imports
``gkdcn.threads``.
"""

from __future__ import annotations

from gkdcn.runtime import reuse_freed_memory, set_threads, torch_threads

__all__ = ["reuse_freed_memory", "set_threads", "torch_threads"]
