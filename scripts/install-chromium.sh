#!/usr/bin/env bash
# Make sure Debian's chromium (used by the browser tests) is installed; install it if missing.
# Runs apt-get directly as root, through `sudo -n` otherwise (never waits at a password prompt).
# Exit 0: chromium is there. Exit 1: it is not, and one line on stderr says what to install.
# "There" means on PATH or at $TACQ_CHROMIUM (default Debian's /usr/bin/chromium), the path
# the browser tests launch: a caller's PATH may well lack /usr/bin.
set -euo pipefail

have_chromium() {  # found, and it runs (a wrapper whose program files are gone does not)
  local bin
  hash -r
  bin=$(command -v chromium 2>/dev/null) || bin=${TACQ_CHROMIUM:-/usr/bin/chromium}
  [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1
}

if have_chromium; then
  exit 0
fi

cannot() {
  echo "chromium is missing and $1: install Debian's chromium (sudo apt-get install chromium)" >&2
  exit 1
}

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  cannot "this user is not root and has no password-less sudo"
fi
command -v apt-get >/dev/null 2>&1 || cannot "this machine has no apt-get"

echo "installing chromium with apt-get (for the browser tests)" >&2
# `env` carries the variable through sudo too; a bare `$SUDO VAR=x cmd` breaks when $SUDO is empty.
"${as_root[@]+"${as_root[@]}"}" apt-get update -qq || cannot "apt-get update failed"
apt_install() {
  "${as_root[@]+"${as_root[@]}"}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq "$@" chromium >/dev/null || cannot "apt-get install chromium failed"
}
apt_install
# dpkg may list chromium as installed while its binary is gone (an image that deleted it):
# then install does nothing and succeeds, and only a reinstall puts the files back.
have_chromium || apt_install --reinstall
have_chromium || cannot "apt-get finished but put no chromium on PATH or at ${TACQ_CHROMIUM:-/usr/bin/chromium}"
