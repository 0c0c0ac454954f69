"""The frequency order of a vocabulary: token ids by train-split count, most frequent first.

The data pipeline's frequency bands and the `adaptive` embedding's bands both cut this order,
and post-hoc compression sorts a dense table by it; it sits below both, numpy only.
Shapes: V the vocabulary size.
"""

from __future__ import annotations

import numpy as np


def frequency_order(counts_V: np.ndarray) -> np.ndarray:
  """Token ids by count, most frequent first, ties by id."""
  return np.argsort(-np.asarray(counts_V), kind='stable')
