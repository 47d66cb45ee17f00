"""flygblad: collect leaders and articles, publish them as feeds and newsletters.

The package is a pipeline of stages, one subpackage each::

    sources -> store -> issues -> render -> delivery
                    \\-> feeds

The CLI (:mod:`pipeline.cli`), the scheduler and the web side all call the same
library functions; the use cases are in :mod:`pipeline.jobs`.
"""

#: The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"
#: The environment variable naming the config file (``flygblad --config`` wins over it).
ENV_CONFIG = "FLYGBLAD_CONFIG"

__all__ = ["ENV_CONFIG", "__version__"]
