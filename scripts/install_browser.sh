#!/usr/bin/env bash
# Set-up for the browser tests (tests/browser): headless Chromium and Python playwright.
# Idempotent, and never fails: where a step cannot be done it says why and the browser suite
# then skips with the reason (pytest -ra lists it). `playwright install` is not used: it
# downloads its own browser, which many machines cannot reach; the suite drives the system
# Chromium (/usr/bin/chromium, or $INT4LAB_CHROMIUM).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CHROMIUM=${INT4LAB_CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    echo "install_browser: chromium present ($CHROMIUM)"
elif ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: no $CHROMIUM and no apt-get: install Chromium by hand; browser tests will skip"
else
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
    fi
    if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
        echo "install_browser: no $CHROMIUM and not root (no passwordless sudo): browser tests will skip"
    else
        echo "install_browser: installing chromium with apt-get (quietly; log in ${TMPDIR:-/tmp}/int4lab-apt.log)"
        export DEBIAN_FRONTEND=noninteractive
        log=${TMPDIR:-/tmp}/int4lab-apt.log
        # stdin from /dev/null: `timeout` runs apt in a background process group, and from an
        # interactive terminal any read of the tty (dpkg, debconf) would stop it (SIGTTIN) until
        # the time-out. --foreground lets the timed-out command receive the terminal's signals.
        timeout --foreground 900 $SUDO apt-get update -qq </dev/null >"$log" 2>&1
        timeout --foreground 900 $SUDO apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confold chromium </dev/null >>"$log" 2>&1
        rc=$?
        # judge by the result, not the exit code: an install can finish and still exit non-zero
        if [ -x "$CHROMIUM" ]; then
            echo "install_browser: chromium installed ($CHROMIUM)"
        else
            echo "install_browser: apt-get install chromium failed (exit $rc; see $log): browser tests will skip"
        fi
    fi
fi

if "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
    echo "install_browser: playwright present"
elif "$PY" -m pip install -q "playwright>=1.40" >/dev/null 2>&1; then   # = the `browser` extra
    echo "install_browser: playwright installed"
else
    echo "install_browser: pip install playwright failed (no network?): browser tests will skip"
fi
exit 0
