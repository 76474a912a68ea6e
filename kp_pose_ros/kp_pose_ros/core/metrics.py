"""Accuracy metrics as the papers define them, shared by benchmarks, training reports and `kp-pose eval`."""
from __future__ import annotations

import numpy as np


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoidal integral of y over x (numpy 2 renamed np.trapz to np.trapezoid; users run numpy 1.21-1.26)."""
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def add_auc(add: np.ndarray, max_m: float = 0.1) -> float:
    """Area under the accuracy-vs-threshold curve of ADD up to max_m, in percent, as DREAM and RoboKeyGen report it.
    Failures (NaN or inf ADD) count as misses at every threshold."""
    thresholds = np.linspace(0.0, max_m, 1001)
    accuracy = (np.asarray(add, dtype=float)[None, :] < thresholds[:, None]).mean(axis=1)
    return trapezoid(accuracy, thresholds) / max_m * 100.0
