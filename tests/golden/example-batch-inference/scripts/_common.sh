# Shared by the scripts of deployment example-batch-inference: finds the Python that has mlshift
# installed and runs one of its verbs on this deployment folder. Sourced, not run.
# shellcheck shell=bash

MLSHIFT_DEPLOYMENT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"

mlshift_python() {
  if [ -n "${MLSHIFT_PYTHON:-}" ]; then
    printf '%s\n' "$MLSHIFT_PYTHON"
    return 0
  fi
  # The checkout this deployment lives in: its .venv (made by `make setup`).
  local dir="$MLSHIFT_DEPLOYMENT_DIR"
  while [ "$dir" != "/" ]; do
    if [ -x "$dir/.venv/bin/python" ] && [ -f "$dir/wizard/__main__.py" ]; then
      printf '%s\n' "$dir/.venv/bin/python"
      return 0
    fi
    dir="$(dirname -- "$dir")"
  done
  # An installed mlshift: the Python its command runs with (type -P: the file on PATH, not the function below).
  local command
  if command="$(type -P mlshift)" && head -n 1 -- "$command" | grep -q '^#!'; then
    local shebang
    shebang="$(head -n 1 -- "$command")"
    shebang="${shebang#\#!}"
    case "$shebang" in
      */python*)
        if [ -x "$shebang" ]; then
          printf '%s\n' "$shebang"
          return 0
        fi ;;
    esac
  fi
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import wizard.cli' >/dev/null 2>&1; then
    command -v python3
    return 0
  fi
  echo "error: cannot find mlshift: run 'make setup' in its checkout, pip install mlshift, or set MLSHIFT_PYTHON" >&2
  return 1
}

mlshift() {
  local python
  python="$(mlshift_python)" || exit 1
  # MLSHIFT_SCRIPT: the script's own name, so that its --help and errors show its usage.
  MLSHIFT_SCRIPT="${0##*/}" exec "$python" -m wizard "$1" "$MLSHIFT_DEPLOYMENT_DIR" "${@:2}"
}
