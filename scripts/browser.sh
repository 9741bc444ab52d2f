#!/usr/bin/env bash
# The browser the UI tests drive (tests/ui): Debian's Chromium at /usr/bin/chromium (or
# $ESCALATION_TEST_CHROMIUM). `make test` runs this first, as `make demo` does its own set-up.
# Installs it with apt-get when it is missing and we are root; otherwise says why the browser
# tests will skip (under CI=true they fail instead: CI must not pass by skipping).
set -u
CHROMIUM="${ESCALATION_TEST_CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0

if [ "$CHROMIUM" = /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "browser: installing Debian's chromium for the browser tests"
  apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver fonts-liberation >/dev/null &&
    [ -x "$CHROMIUM" ] && exit 0
  echo "browser: apt-get could not install chromium" >&2
  # CI must have it: stop here with the reason rather than fail 7 tests later
  [ "${CI:-}" = true ] && exit 1
  exit 0
fi

if [ "$CHROMIUM" != /usr/bin/chromium ]; then why="ESCALATION_TEST_CHROMIUM names it"
elif [ "$(id -u)" != 0 ]; then why="not root"
else why="no apt-get"; fi
echo "browser: no Chromium at $CHROMIUM and cannot install it ($why): the browser tests will skip" \
     "(install chromium, or point ESCALATION_TEST_CHROMIUM at one)" >&2
[ "${CI:-}" = true ] && exit 1
exit 0
