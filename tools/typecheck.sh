#!/usr/bin/env bash
# mypy cannot follow setuptools' editable finder, so type-check through a tree of links that
# lays the four source folders out as the installed `geodelta` package.
set -euo pipefail
cd "$(dirname "$0")/.."
MYPY=${1:-mypy}
root=build/typecheck/geodelta
rm -rf build/typecheck && mkdir -p "$root"
for d in schemas sources annotators pipelines; do ln -s "../../../$d" "$root/$d"; done
for f in __init__.py py.typed data.py; do ln -s "../../../geodelta/$f" "$root/$f"; done
MYPYPATH=build/typecheck "$MYPY" -p geodelta
