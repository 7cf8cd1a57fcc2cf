"""LaMOO: learned space partitioning for multi-objective search."""

from jouled.scheduler.lamoo.optimizer import (
    TRUTH_CP_FRACTION,
    TRUTH_MAX_HEIGHT,
    TRUTH_MIN_LEAF,
    LaMOO,
    LaMOOConfig,
    truth_config,
)
from jouled.scheduler.lamoo.tree import Tree, build_tree, kmeans2, svm_decision, svm_predict

__all__ = [
    "TRUTH_CP_FRACTION",
    "TRUTH_MAX_HEIGHT",
    "TRUTH_MIN_LEAF",
    "LaMOO",
    "LaMOOConfig",
    "Tree",
    "build_tree",
    "kmeans2",
    "svm_decision",
    "svm_predict",
    "truth_config",
]
