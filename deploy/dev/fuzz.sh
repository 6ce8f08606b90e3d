#!/usr/bin/env bash
# fuzz.sh [SECONDS] — run every fuzz target in the repository for a while each.
set -euo pipefail
cd "$(dirname "$0")/../.."
t=${1:-20}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //'); do
		echo "== $pkg $f"
		go test -run '^$' -fuzz "^$f\$" -fuzztime "${t}s" "$pkg"
	done
done
