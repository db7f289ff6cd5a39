"""Where things are in a deployment's pods: the paths and variables the wizard renders into the
manifests and the runtime reads there, declared once for both (standard library only: the wizard
imports this module as it starts)."""

CONFIG_MOUNT = "/etc/mlshift"
CONFIG_PATH_IN_POD = f"{CONFIG_MOUNT}/config.yaml"  # the deployment's config.yaml (its ConfigMap)
# A folder of API keys, one file per key named after it (the key Secret, mounted): what the
# included server's --api-keys-dir reads when the flag is not given (runtime/keys.py).
API_KEYS_DIR_ENV = "RUNTIME_API_KEYS_DIR"
# The model a server loads, replacing inference.model (a flag still wins): what promote sets on a
# serving Deployment (runtime/promote.py), so that the served model changes without a new config.
MODEL_ENV = "RUNTIME_MODEL"
# The model store (resources.storage.models): its claim and mount when config.yaml names none.
STORE_CLAIM = "mlshift-models"
STORE_MOUNT = "/models"
# Where Kubernetes clients look for a pod's ServiceAccount token, CA and namespace.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
