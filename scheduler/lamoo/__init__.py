"""LaMOO: learned space partitioning for multi-objective search."""
