"""CSRS core: certified cost-sensitive robustness via randomized smoothing."""

__version__ = "0.1.0"


class CSRSError(Exception):
    """An error the user can act on; its message says what is wrong and what to do. The CLI exits
    with exit_code (2: bad input, unless a subclass or instance says otherwise)."""

    exit_code = 2
