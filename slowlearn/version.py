"""The installed version of slowlearn (settings.ini is the one place it is written)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("slowlearn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
