"""The steps of scripts/gpu_check.py, one module each, and the framework that runs them."""
