"""Reports over run directories: tables (`tables`, `paper_tables`), figures, index.html.

`make_report` lives in `align.report.build` (imported lazily here, so that the training CLI does
not import matplotlib).
"""


def __getattr__(name: str):
    if name in ("make_report", "write_tables"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'align.report' has no attribute {name!r}")
