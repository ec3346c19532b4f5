"""observd: an unattended observatory data-reduction daemon."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("observd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
