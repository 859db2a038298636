#!/usr/bin/env bash
# Set up docpipe for the demo, or for development and the tests:
#   1. the Debian packages in scripts/system-packages.txt, plus system-packages-test.txt when
#      the test extra is asked for (installed when root, else listed);
#   2. a virtualenv in $VENV (default .venv) with docpipe (the docpipe-idp distribution) and
#      every built-in block plugin under plugins/, installed editable, with the extras in
#      $EXTRAS (comma-separated; default: all of them, as `make test` needs; `make demo` asks
#      for none) and constraints.txt applied.
# Torch: constraints.txt pins the CPU build this project is tested with. For another build,
# install it into the venv first (README, "Your own models, GPUs"); set TORCH_INDEX_URL to
# have this script take torch from that index (e.g. https://download.pytorch.org/whl/cpu or
# .../cu126) before the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS-test,bench,ui,uitest,ray}

lists=(scripts/system-packages.txt)
[[ ",$EXTRAS," == *",test,"* ]] && lists+=(scripts/system-packages-test.txt)
mapfile -t wanted < <(cat "${lists[@]}" | grep -v '^\s*#' | sed 's/\s//g' | grep -v '^$' || true)
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
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${pip[@]}" torch --index-url "$TORCH_INDEX_URL"
fi
# the distribution was called "docpipe" before it was renamed docpipe-idp (that name on the
# package index belongs to another project): drop an old editable install of this checkout
"$VENV/bin/python" -m pip uninstall -y -q docpipe >/dev/null 2>&1 || true
editables=(-e ".${EXTRAS:+[$EXTRAS]}")
for dir in plugins/*/; do
  [ -f "$dir/pyproject.toml" ] && editables+=(-e "$dir")
done
"${pip[@]}" --no-build-isolation "${editables[@]}"
echo "setup: docpipe installed in $VENV with plugins: $(ls plugins | tr '\n' ' ')"
