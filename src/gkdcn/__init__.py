"""gkdcn: geochemical anomaly patterns with deformable convolutions guided by geological knowledge."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gkdcn")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
