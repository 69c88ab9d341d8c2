# hdshub: JupyterHub configuration. Fixed on purpose: every setting comes from
# hdshub.configurer, computed from validated settings (state directory, tiers, kits).
# Site-specific overrides go in $HDSHUB_CONFIG_DIR/jupyterhub_config.d/*.py, loaded in
# sorted order after ours (the escape hatch; prefer data in tiers.yaml).
from pathlib import Path

from hdshub.configurer import apply
from hdshub.settings import load_settings

c = get_config()  # noqa: F821 (provided by JupyterHub)
settings = load_settings()
apply(c, settings)

if settings.config_dir is not None:
    for extra in sorted((settings.config_dir / "jupyterhub_config.d").glob("*.py")):
        load_subconfig(str(extra))  # noqa: F821
