#!/bin/sh
# compare.sh OLD.txt NEW.txt
#
# Compares two `go test -bench` outputs (make microbench) with benchstat,
# pinned to a version the Go module proxy serves. Run each side with
# -count 6 or more, on the same machine, back to back.
set -eu
if [ "$#" -ne 2 ]; then
	echo "usage: $0 OLD.txt NEW.txt" >&2
	exit 2
fi
for f in "$1" "$2"; do
	if [ ! -r "$f" ]; then
		echo "$0: cannot read $f" >&2
		exit 2
	fi
done
exec go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da "$1" "$2"
