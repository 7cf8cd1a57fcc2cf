"""LaMOO's LabelSVC: scikit-learn's SVC with its target checks skipped for our own 0/1 labels — same model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

from jouled.scheduler.lamoo.tree import LabelSVC


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.random((150, 30)) > 0.8).astype(np.float64)
    return x, (rng.random(150) > 0.4).astype(np.int64)


@pytest.mark.parametrize("kernel", ["poly", "rbf"])
def test_label_svc_fits_the_same_model_as_svc(kernel: str) -> None:
    for seed in range(3):
        x, y = _data(seed)
        ref = SVC(kernel=kernel, gamma="scale").fit(x, y)
        got = LabelSVC(kernel=kernel, gamma="scale").fit(x, y)
        assert np.array_equal(got.classes_, ref.classes_)
        assert np.array_equal(got.class_weight_, ref.class_weight_)
        assert np.array_equal(got.support_, ref.support_)
        assert np.array_equal(got.decision_function(x), ref.decision_function(x))
        assert np.array_equal(got.predict(x), ref.predict(x))


def test_label_svc_defers_to_sklearn_outside_its_case() -> None:
    x, y = _data(0)
    with pytest.raises(ValueError, match="classes"):  # one class: scikit-learn's own error
        LabelSVC().fit(x, np.zeros(len(y), dtype=np.int64))
    weighted = LabelSVC(class_weight="balanced").fit(x, y)  # class weights: scikit-learn's path
    assert np.array_equal(weighted.class_weight_, SVC(class_weight="balanced").fit(x, y).class_weight_)
    labels = np.where(y == 1, "good", "bad")  # string labels: scikit-learn's path
    assert list(LabelSVC().fit(x, labels).classes_) == ["bad", "good"]
