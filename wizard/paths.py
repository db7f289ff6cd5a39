"""Where the tool's own files are, the same in a checkout and in an installed package.

In a checkout the templates are the top-level ``templates/`` folder; in a wheel they are mapped
into the package as ``wizard/templates/`` (see pyproject.toml). Either way ``wizard`` and
``runtime`` sit side by side in :data:`SOURCE_ROOT` (the checkout, or site-packages), which is
what a build context copies and what a local run puts on ``PYTHONPATH``. Nothing else assumes a
checkout: deployments go under the current directory, and user cluster profiles are read from
the current directory too (or the file ``$MLSHIFT_CLUSTERS`` names). Compiled templates are
kept between runs in the user's cache folder (:data:`CACHE`; ``$MLSHIFT_CACHE_DIR`` moves it).
"""

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE.parent
TEMPLATES = PACKAGE / "templates" if (PACKAGE / "templates").is_dir() else SOURCE_ROOT / "templates"
DEFAULT_DEPLOYMENTS = Path("deployments")
USER_CLUSTERS = Path(os.environ.get("MLSHIFT_CLUSTERS") or "clusters.yaml")
CACHE = Path(os.environ.get("MLSHIFT_CACHE_DIR")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlshift")
CONFIG_MOUNT = "/etc/mlshift"
CONFIG_PATH_IN_POD = f"{CONFIG_MOUNT}/config.yaml"
WORKSPACE_MOUNT = "/workspace"
