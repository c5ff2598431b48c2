"""CSRS core: certified cost-sensitive robustness via randomized smoothing."""

__version__ = "0.1.0"


class CSRSError(Exception):
    """An error the user can act on; its message says what is wrong and what to do. The CLI exits
    with exit_code (2: bad input, unless a subclass or instance says otherwise)."""

    exit_code = 2


# The public API, imported on first use: `import csrs_core` stays light, and stage B (CostMatrix,
# certify_from_counts) never needs torch; SmoothedClassifier (torch) loads only when asked for.
_LAZY = {"CostMatrix": "csrs_core.certification.cost", "certify_from_counts": "csrs_core.certification.certificates",
         "SmoothedClassifier": "csrs_core.sampling.smoothed"}
__all__ = ["CSRSError", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
