#!/bin/sh
# Makes sure Prometheus >= 2.42 (with promtool) and Alertmanager >= 0.25 (with amtool) are installed, and
# PostgreSQL's server (initdb, pg_ctl: the PostgreSQL store's tests run a real one, tests/postgres_server.py),
# and Chromium with its WebDriver (chromium, chromedriver: the browser tests drive Debian's, devstack/browser.py):
# installs Debian's packages when missing and we are root, otherwise stops with one line saying what to do.
set -eu
PACKAGES="prometheus prometheus-alertmanager"

have_all() {
    command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 &&
    { command -v alertmanager >/dev/null 2>&1 || command -v prometheus-alertmanager >/dev/null 2>&1; } &&
    command -v amtool >/dev/null 2>&1
}

version_ok() {  # $1 binary, $2 minimum x.y
    v=$("$1" --version 2>&1 | sed -n 's/.*version \([0-9][0-9]*\)\.\([0-9][0-9]*\)\..*/\1 \2/p' | head -n 1)
    [ -n "$v" ] || return 1
    set -- $v "$2"
    want_major=${3%%.*}; want_minor=${3#*.}
    [ "$1" -gt "$want_major" ] || { [ "$1" -eq "$want_major" ] && [ "$2" -ge "$want_minor" ]; }
}

install_debian() {  # $1: what is missing, in words; then the Debian packages that bring it
    what=$1; shift
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: $what missing; install with: sudo apt-get install -y $*" >&2
        exit 1
    fi
    echo "installing $* (Debian packages)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! have_all; then
    install_debian "Prometheus and Alertmanager are" $PACKAGES
fi

have_postgres() {  # where tests/postgres_server.py looks: pg_config --bindir, then /usr/lib/postgresql/*/bin
    bindir=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then
        return 0
    fi
    for bindir in /usr/lib/postgresql/*/bin; do
        if [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then
            return 0
        fi
    done
    return 1
}

if ! have_postgres; then
    install_debian "PostgreSQL's server (initdb, pg_ctl) is" postgresql
    # The package starts a cluster of its own; the tests never use it (they initdb their own on a free port).
fi

have_chromium() {  # where devstack/browser.py looks: /usr/bin, then PATH
    { [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; } &&
    { [ -x /usr/bin/chromedriver ] || command -v chromedriver >/dev/null 2>&1; }
}

if ! have_chromium; then
    install_debian "chromium or chromedriver is" chromium chromium-driver
fi

AM=$(command -v alertmanager || command -v prometheus-alertmanager)
version_ok prometheus 2.42 || { echo "error: prometheus is older than 2.42; upgrade it (apt-get install prometheus)" >&2; exit 1; }
version_ok "$AM" 0.25 || { echo "error: alertmanager is older than 0.25; upgrade it (apt-get install prometheus-alertmanager)" >&2; exit 1; }
