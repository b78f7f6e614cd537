#!/usr/bin/env bash
# Refresh constraints.txt: resolve the newest releases allowed by pyproject.toml in a NEW virtual
# environment, run the whole suite with them, and only if it passes write the exact versions.
#
#   scripts/refresh_pins.sh            # then review `git diff constraints.txt` and commit
#
# torch stays at 2.13.0 (the CPU build on disk); the PLUMED kernel wheel (hillclimber) is
# re-resolved too. Needs ~15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
pip="$work/venv/bin/python -m pip --disable-pip-version-check"
$pip install --quiet --no-compile --upgrade pip
$pip install --quiet --no-compile torch==2.13.0
$pip install --quiet --no-compile -e ".[test,docs]"
$pip install --quiet --no-compile --no-deps torch-dftd  # D3 tables; its pymatgen dependency is unused
$pip install --quiet --no-compile --no-deps --target "$work/venv/plumed-kernel" hillclimber
kernel="$work/venv/plumed-kernel/plumed/_lib/lib/libplumedKernel.so"
PLUMED_KERNEL="$kernel" "$work/venv/bin/python" -m pytest -q -p no:cacheprovider --dist loadfile \
  -n "$("$work/venv/bin/python" -c "from fesurf.execution import usable_cores; print(usable_cores())")"  # as make test
{
  echo "# Exact versions the whole suite was validated with (make test installs with them)."
  echo "# Refresh: scripts/refresh_pins.sh (fresh venv, newest releases, full suite, then rewrite this file)."
  $pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu$/torch==\1/'
  echo "hillclimber==$(ls "$work/venv/plumed-kernel" | sed -n 's/^hillclimber-\(.*\)\.dist-info$/\1/p')"
  echo "pip==$($pip --version | awk '{print $2}')"
} | { read -r a; read -r b; echo "$a"; echo "$b"; sort -f; } > constraints.txt
echo "constraints.txt rewritten; review with: git diff constraints.txt"
