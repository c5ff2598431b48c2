"""Public import path of `csrs_core.training.losses` (design §5):
everything public there is importable here."""
from csrs_core.training.losses import *  # noqa: F401,F403
from csrs_core.training.losses import cohen_r_loss, cs_macer_loss, gaussian_loss, macer_loss  # noqa: F401
