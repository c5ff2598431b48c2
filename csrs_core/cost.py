"""Public import path of `csrs_core.certification.cost` (design §5):
everything public there is importable here."""
from csrs_core.certification.cost import *  # noqa: F401,F403
from csrs_core.certification.cost import CostMatrix, CostMatrixError, parse_cost  # noqa: F401
