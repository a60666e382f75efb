#!/usr/bin/env bash
# The Debian packages the tests start for real, installed when this machine allows it.
#
#   bash tools/system-packages.sh          # install what is missing (root, or sudo without a
#                                          # password); otherwise stop with one line naming them
#   bash tools/system-packages.sh --list   # print the packages, one per line
#
# GEODELTA_ALLOW_SKIPS=1 turns "cannot install" into a warning: the tests that need the
# missing packages then skip (and pytest lists them) instead of failing.
set -euo pipefail

# One line each, with what needs it.
APT_PACKAGES=(
  postgresql               # tests/pgstac_server.py: initdb + postgres for a throwaway cluster (integration)
  postgresql-15-postgis-3  # PostGIS for pgstac (stac-fastapi-pgstac integration tests)
  chromium                 # tests/test_report_demo.py: the quality report opened headless (Playwright)
)

if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${APT_PACKAGES[@]}"
  exit 0
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  line="missing Debian packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
  if [ "${GEODELTA_ALLOW_SKIPS:-}" = "1" ]; then
    echo "warning: $line; GEODELTA_ALLOW_SKIPS=1: the tests that need them will skip" >&2
    exit 0
  fi
  echo "error: $line (or set GEODELTA_ALLOW_SKIPS=1 to skip the tests that need them)" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
