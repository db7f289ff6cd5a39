#!/usr/bin/env bash
# Upload the W&B runs tracked offline (on the workspace volume) with `wandb sync`, each once.
#
# Usage: scripts/sync-runs.sh [options]      (scripts/sync-runs.sh --help lists them)
# Works from any directory. Every run re-reads config.yaml, so edits take effect at once;
# --dry-run prints the oc commands instead of running them.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=_common.sh
source "$here/_common.sh"
mlshift sync-runs "$@"
