"""Where the tool's own files are."""

from pathlib import Path

TOOL_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = TOOL_ROOT / "templates"
RUNTIME_SRC = TOOL_ROOT / "runtime"
DEFAULT_DEPLOYMENTS = TOOL_ROOT / "deployments"
CONFIG_MOUNT = "/etc/mlshift"
CONFIG_PATH_IN_POD = f"{CONFIG_MOUNT}/config.yaml"
WORKSPACE_MOUNT = "/workspace"
