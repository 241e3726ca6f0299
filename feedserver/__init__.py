"""feedserver: a real-time multi-tenant event feed server (REST + Socket.IO)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("feedserver")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
