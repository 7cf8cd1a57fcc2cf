"""CE-NAS: carbon providers, allocation policies, LaMOO, search space, executors, simulator."""
