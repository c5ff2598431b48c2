"""Stage B: certificates from counts. Cost matrices (one grammar for CLI, URL and JSON), confidence
bounds, per-example certificates, metrics, statistics, the comparison policy and per-example
explanations. Imports numpy, scipy and pandas only: it runs where torch is not installed."""
