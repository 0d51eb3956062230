"""Explanation metrics (faithfulness and localisation), substrates and explainers.

Importing this package registers every metric in `METRICS`:

    >>> from align.metrics import METRICS
    >>> METRICS.names()  # doctest: +NORMALIZE_WHITESPACE
    ['comprehensiveness', 'sufficiency', 'insertion', 'deletion',
     'iou', 'pointing_game', 'energy_pointing_game']

See docs/metrics.md for the formulas, directions and edge cases.
"""

# Import order is registration order (the order of METRICS.names(), tables and docs), so the
# metric modules are listed by hand rather than alphabetically.
from align.metrics.base import METRICS, Aggregate, Metric, MetricResult, aggregate
from align.metrics.comprehensiveness import Comprehensiveness
from align.metrics.sufficiency import Sufficiency
from align.metrics.insertion_deletion import Deletion, Insertion
from align.metrics.localisation import EnergyPointingGame, IoU, PointingGame
from align.metrics.explanations import EXPLAINERS, explain
from align.metrics.perturbation import AOPC_FRACTIONS, rank_pixels, topk_masks
from align.metrics.substrates import SUBSTRATES, make_substrate

__all__ = [
    "AOPC_FRACTIONS",
    "Aggregate",
    "Comprehensiveness",
    "Deletion",
    "EXPLAINERS",
    "EnergyPointingGame",
    "Insertion",
    "IoU",
    "METRICS",
    "Metric",
    "MetricResult",
    "PointingGame",
    "SUBSTRATES",
    "Sufficiency",
    "aggregate",
    "explain",
    "make_substrate",
    "rank_pixels",
    "topk_masks",
]
