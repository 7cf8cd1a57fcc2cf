"""LaMOO: learned space partitioning for multi-objective search."""

from jouled.scheduler.lamoo.optimizer import LaMOO, LaMOOConfig
from jouled.scheduler.lamoo.tree import Tree, build_tree, kmeans2, svm_decision, svm_predict

__all__ = ["LaMOO", "LaMOOConfig", "Tree", "build_tree", "kmeans2", "svm_decision", "svm_predict"]
