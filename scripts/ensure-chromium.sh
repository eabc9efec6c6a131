#!/usr/bin/env bash
# ensure-chromium.sh: make sure a headless-capable Chromium is installed for the browser test of the
# built-in dashboard (internal/e2e, chromedp).
#
#   CHROMIUM_BIN  the browser to use (default: chromium on PATH, else /usr/bin/chromium).
#
# A browser that runs (`--version` answers) is left alone. A missing one is installed with apt-get
# (Debian's `chromium` package, and fonts-dejavu-core so that the page's text renders in screenshots)
# when running as root; otherwise the script says what to install and
# exits 1. Idempotent; silent when Chromium is already there. Exit status 0 = Chromium usable.
set -euo pipefail

log() { printf 'ensure-chromium: %s\n' "$*" >&2; }
die() {
	printf 'ensure-chromium: ERROR: %s\n' "$*" >&2
	exit 1
}

chromium_bin() {
	if [[ -n ${CHROMIUM_BIN:-} ]]; then
		printf '%s\n' "$CHROMIUM_BIN"
	elif command -v chromium >/dev/null 2>&1; then
		command -v chromium
	else
		printf '/usr/bin/chromium\n'
	fi
}

chromium_runs() { # path -> 0 if the browser answers --version
	[[ -x $1 ]] && timeout 30 "$1" --version >/dev/null 2>&1
}

main() {
	local bin
	bin=$(chromium_bin)
	chromium_runs "$bin" && return 0
	[[ -n ${CHROMIUM_BIN:-} ]] && die "CHROMIUM_BIN=$CHROMIUM_BIN does not run ('$CHROMIUM_BIN --version' failed)"

	if [[ $(id -u) -ne 0 ]]; then
		die "Chromium is not installed; the dashboard's browser test needs it. Install it (Debian/Ubuntu: sudo apt-get install -y chromium) or run this script as root"
	fi
	command -v apt-get >/dev/null 2>&1 || die "Chromium is not installed and apt-get is not available; install Chromium with your package manager"

	# Serialise concurrent runs (parallel make targets); best effort when flock is missing.
	if command -v flock >/dev/null 2>&1; then
		exec 9>"${TMPDIR:-/tmp}/otelcol-analytics-ensure-chromium.$(id -u).lock"
		flock -w 600 9 || die "timed out waiting for another ensure-chromium.sh run"
		bin=$(chromium_bin)
		chromium_runs "$bin" && return 0 # installed by the run we waited for
	fi

	log "apt-get update"
	# Not fatal: with stale or missing lists the install below fails with its own message.
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 9>&- || log "warning: apt-get update failed"
	log "apt-get install -y chromium fonts-dejavu-core"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2 9>&- ||
		die "could not install chromium with apt-get; install Chromium with your package manager"
	bin=$(chromium_bin)
	chromium_runs "$bin" || die "chromium was installed but '$bin --version' fails"
	log "installed $("$bin" --version 2>/dev/null)"
}

main "$@"
