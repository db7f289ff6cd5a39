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

from runtime.pod import CONFIG_MOUNT

PACKAGE = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE.parent
TEMPLATES = PACKAGE / "templates" if (PACKAGE / "templates").is_dir() else SOURCE_ROOT / "templates"
DEFAULT_DEPLOYMENTS = Path("deployments")
USER_CLUSTERS = Path(os.environ.get("MLSHIFT_CLUSTERS") or "clusters.yaml")
CACHE = Path(os.environ.get("MLSHIFT_CACHE_DIR")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlshift")
# The API keys of a served application: its key Secret mounted as a folder, one file per key, named
# like the Secret's data key (inference.api_key_secret); the included server reads the folder that
# RUNTIME_API_KEYS_DIR names, and reads it again when the Secret changes.
API_KEYS_MOUNT = f"{CONFIG_MOUNT}/api-keys"
API_KEY_DATA_KEY = "api-key"  # the data key the scripts send and vLLM checks (VLLM_API_KEY)
WORKSPACE_MOUNT = "/workspace"
