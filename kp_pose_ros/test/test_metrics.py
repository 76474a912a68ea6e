import numpy as np
import pytest

from kp_pose_ros.core.metrics import add_auc, trapezoid


def test_trapezoid_integrates_piecewise_linear_exactly():
    x = np.array([0.0, 1.0, 3.0])
    y = np.array([0.0, 2.0, 2.0])
    assert trapezoid(y, x) == pytest.approx(1.0 + 4.0)


def test_add_auc_of_perfect_missing_and_uniform_estimates():
    assert add_auc(np.zeros(10)) == pytest.approx(100.0, abs=0.1)
    assert add_auc(np.full(10, np.nan)) == 0.0
    assert add_auc(np.full(10, np.inf)) == 0.0
    # ADD uniform on [0, 0.1 m]: accuracy rises linearly from 0 to 1, area one half.
    assert add_auc(np.linspace(0.0, 0.1, 2001)) == pytest.approx(50.0, abs=0.2)
    # Half the frames perfect, half failed.
    assert add_auc(np.r_[np.zeros(5), np.full(5, np.nan)]) == pytest.approx(50.0, abs=0.1)
