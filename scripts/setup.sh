#!/usr/bin/env bash
# Set up docpipe for development, the demo and the tests:
#   1. the Debian packages in scripts/system-packages.txt (installed when root, else listed);
#   2. a virtualenv in $VENV (default .venv) with docpipe, every built-in block plugin under
#      plugins/ and the test tools, installed editable, with constraints.txt applied.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

mapfile -t wanted < <(grep -v '^\s*#' scripts/system-packages.txt | sed 's/\s//g' | grep -v '^$' || true)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # try the machine's package lists first; refresh them only when that fails
    apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
  else
    echo "setup: these system packages are missing; install them as root, then rerun make:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: docpipe needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version))" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt)
"${pip[@]}" "setuptools>=68" wheel
editables=(-e ".[test,bench,ui,uitest,ray]")
for dir in plugins/*/; do
  [ -f "$dir/pyproject.toml" ] && editables+=(-e "$dir")
done
"${pip[@]}" --no-build-isolation "${editables[@]}"
echo "setup: docpipe installed in $VENV with plugins: $(ls plugins | tr '\n' ' ')"
