"""Public import path of `csrs_core.certification.certificates` (design §5):
everything public there is importable here."""
from csrs_core.certification.certificates import *  # noqa: F401,F403
from csrs_core.certification.certificates import certified_cost, certify_from_counts  # noqa: F401
