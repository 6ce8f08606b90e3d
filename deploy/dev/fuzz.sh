#!/usr/bin/env bash
# fuzz.sh [SECONDS] — run every fuzz target in the repository for a while each.
# Targets are found, not listed: every `func FuzzXxx` in a *_test.go file of
# the fast tier (files tagged `//go:build integration` are left out: a
# decoder's fuzz target needs no daemon, so it belongs in the fast tier).
set -euo pipefail
cd "$(dirname "$0")/../.."
t=${1:-20}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	files=$(grep -L '^//go:build integration' "$dir"/*_test.go 2>/dev/null || true)
	[ -n "$files" ] || continue
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' $files | sed 's/func //'); do
		echo "== $pkg $f"
		go test -run '^$' -fuzz "^$f\$" -fuzztime "${t}s" "$pkg"
	done
done
