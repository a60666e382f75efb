#!/usr/bin/env bash
# mypy cannot follow setuptools' editable finder, so type-check through a tree of links that
# lays the four source folders out as the installed `geodelta` package.
set -euo pipefail
cd "$(dirname "$0")/.."
MYPY=${1:-mypy}
root=build/typecheck/geodelta
rm -rf build/typecheck && mkdir -p "$root"
for d in schemas sources annotators pipelines; do ln -s "../../../$d" "$root/$d"; done
for f in geodelta/*.py geodelta/py.typed; do ln -s "../../../geodelta/$(basename "$f")" "$root/$(basename "$f")"; done
MYPYPATH=build/typecheck "$MYPY" -p geodelta
