#!/usr/bin/env bash
# Create the benchmark-only environment .bench-venv (repo root) holding truthound 3.2.0.
# truthound is never a dependency of airflow_escalation: it lives only in this venv.
# Idempotent and quiet: does nothing when the venv already has truthound 3.2.0.
#   bench/setup_env.sh               # truthound only
#   bench/setup_env.sh --with-redis  # also the redis client and hiredis (truthound's redis store needs it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.bench-venv"
PYTHON="${PYTHON:-python3}"
TRUTHOUND_VERSION="3.2.0"

want_redis=0
for arg in "$@"; do
  case "$arg" in
    --with-redis) want_redis=1 ;;
    *) echo "setup_env.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi

has() {  # has DIST [VERSION]
  "$VENV/bin/python" - "$@" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    v = version(sys.argv[1])
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if len(sys.argv) < 3 or v == sys.argv[2] else 1)
PY
}

pkgs=()
has truthound "$TRUTHOUND_VERSION" || pkgs+=("truthound==$TRUTHOUND_VERSION")
if [ "$want_redis" = 1 ]; then
  has redis || pkgs+=("redis>=5")
  has hiredis || pkgs+=("hiredis")  # the C reply parser, as ours uses (same client speed-up for both)
fi

if [ "${#pkgs[@]}" -gt 0 ]; then
  # quiet: pip's output is shown only when the install fails
  if ! out="$("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" 2>&1)"; then
    echo "$out" >&2
    echo "setup_env.sh: installing ${pkgs[*]} into $VENV failed" >&2
    exit 1
  fi
fi
