# Configuration file of the jupyterhub-idle-culler service (see hdshub/culling.py).
from hdshub.culling import cull_by_tier

c.IdleCuller.cull_arbiter_hook = cull_by_tier  # noqa: F821 (c is given by traitlets)
