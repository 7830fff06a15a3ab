#!/usr/bin/env bash
# Runs Keystone's tests as CI does: the whole suite under the race
# detector, then the allocation budgets, which run without it (the race
# runtime allocates on its own and would spoil them), then the deployment
# manifests' module.
#
# -race needs cgo, and cgo a C compiler, which Go does not ship. On a
# fresh Debian machine this script installs one when it may (as root, or
# through sudo); otherwise it says what to install and stops.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v "$(go env CC)" >/dev/null 2>&1; then
	pkgs=(gcc libc6-dev)
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "test.sh: installing a C compiler for -race: ${pkgs[*]}" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
		echo "test.sh: installing a C compiler for -race: sudo apt-get install ${pkgs[*]}" >&2
		sudo apt-get update -qq
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
	else
		echo "test.sh: go test -race needs a C compiler ($(go env CC)); install gcc and libc6-dev" >&2
		exit 1
	fi
fi

go test -race ./...
go test -run Alloc ./...
# deploy/ is a module of its own (the Kubernetes API types its manifest
# tests decode into stay out of the gateway's dependencies).
(cd deploy && go test ./...)
