#!/bin/sh
# The Debian packages the tests use beside Python's, installed when missing (the README's test
# command runs this first): Chromium, for the live page's browser test, and promtool (in Debian's
# prometheus package), for the alert rules' tests. Needs root or password-less sudo and apt-get;
# without them it says so and the tests that need these skip, each naming what is missing.
set -e
need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "tests/os-packages.sh: not root and no password-less sudo: not installing$need (those tests will skip)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/os-packages.sh: no apt-get here: install$need by hand (those tests will skip)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "tests/os-packages.sh: installing$need (Debian packages)" >&2
# shellcheck disable=SC2086 # $need is a list of package names
$sudo apt-get install -y -q --no-install-recommends $need >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends $need >/dev/null; }
# Only promtool is wanted from the prometheus package: where systemd runs, its server stays off.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
