#!/usr/bin/env bash
# Install Debian's chromium (and fonts for its screenshots) for the web app's end-to-end test,
# tests/test_ui_browser.py. Playwright drives this system browser through
# executable_path=/usr/bin/chromium; Playwright's own browser download is not used.
# Needs root (or sudo) and the Debian package archive. Does nothing when all is installed.
set -euo pipefail

# chromium: the browser; fonts-dejavu-core: text; fonts-noto-color-emoji: the app's emoji
PACKAGES=(chromium fonts-dejavu-core fonts-noto-color-emoji)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ -x /usr/bin/chromium ] && [ ${#missing[@]} -eq 0 ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; install a Chromium build at /usr/bin/chromium by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "error: installing chromium needs root: run this script as root or install sudo" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]:-chromium}"

if [ ! -x /usr/bin/chromium ]; then
    echo "error: apt-get finished but /usr/bin/chromium is missing" >&2
    exit 1
fi
echo "installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
