"""flygblad: collect leaders and articles, publish them as feeds and newsletters.

The package is a pipeline of stages, one subpackage each::

    sources -> store -> issues -> render -> delivery
                    \\-> feeds

The CLI (:mod:`pipeline.cli`), the scheduler and the web side all call the same
library functions; see :mod:`pipeline.app` for the entry points.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flygblad")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
