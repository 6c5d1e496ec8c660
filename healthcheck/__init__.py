"""healthcheck: a multi-region synthetic health-check daemon."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("healthcheck")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
