#!/bin/sh
# The Debian packages the tests use beside Python's, installed when missing (the README's test
# command runs this first): Chromium, for the live page's browser test, promtool (in Debian's
# prometheus package), for the alert rules' tests, and PostgreSQL's server binaries, for the
# journal on PostgreSQL (the tests start private clusters of their own; no system one is made). Needs root or password-less sudo and apt-get;
# without them it says so and the tests that need these skip, each naming what is missing.
set -e
need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need="$need postgresql"
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
case "$need" in *postgresql*)
    # The binaries only: no server started by the package's scripts (policy-rc.d, removed again
    # however this script ends), and the cluster it makes is dropped after (below): the tests
    # make private clusters of their own.
    clusters_before=$(pg_lsclusters -h 2>/dev/null || true)
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
        trap '$sudo rm -f /usr/sbin/policy-rc.d; exit 1' INT TERM HUP
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod 755 /usr/sbin/policy-rc.d
    fi
esac
echo "tests/os-packages.sh: installing$need (Debian packages)" >&2
# shellcheck disable=SC2086 # $need is a list of package names
$sudo apt-get install -y -q --no-install-recommends $need >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends $need >/dev/null; }
case "$need" in *postgresql*)
    pg_lsclusters -h 2>/dev/null | while read -r version name _rest; do
        printf '%s\n' "$clusters_before" | grep -q "^$version $name " \
            || $sudo pg_dropcluster --stop "$version" "$name" >/dev/null 2>&1 || true
    done
esac
# Only promtool is wanted from the prometheus package: where systemd runs, its server stays off.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
