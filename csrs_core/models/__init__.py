"""Base classifiers: the architectures by name and CSRS's own checkpoint format (safe loading only)."""
