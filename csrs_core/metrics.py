"""Public import path of `csrs_core.certification.metrics` (design §5):
everything public there is importable here."""
from csrs_core.certification.metrics import *  # noqa: F401,F403
from csrs_core.certification.metrics import summarize  # noqa: F401
