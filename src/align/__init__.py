"""align: explanation-guided learning with ALIGN (arXiv 2511.06944) and its baselines.

Public API: `align.train(...)`, `align.load_run(path)` -> `Run` (`preprocess`, `predict`,
`gradcam`, `mask`), `align.overlay(x, maps)` (see `align.api`).
"""

__version__ = "0.1.0"

__all__ = ["__version__", "train", "load_run", "Run", "overlay"]


def __getattr__(name: str):
    # Lazy so that `import align.data.synthetic` (or the CLI's --help) does not load the whole
    # training stack.
    if name in ("train", "load_run", "Run", "overlay"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'align' has no attribute {name!r}")
