#!/usr/bin/env bash
# Start VS Code (code-server) in the pod and forward it to this machine.
#
# Usage: scripts/vscode.sh [options]      (scripts/vscode.sh --help lists them)
# Works from any directory. Every run re-reads config.yaml, so edits take effect at once;
# --dry-run prints the oc commands instead of running them.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=_common.sh
source "$here/_common.sh"
mlshift vscode "$@"
