#!/usr/bin/env bash
# benchtable.sh FILE... — the table `make bench` ends with. Every benchmark
# that has a goal prints one line per figure, anywhere in its output
# (fmt.Printf, b.Logf or echo):
#   BENCHROW figure|baseline|ratio|goal|met
# figure holds the measured value ("seller start = 0.91 s"), baseline the
# same figure of the baseline run side by side with it ("-" if none), ratio
# figure/baseline, goal what the issue asks, met yes or no. This prints them
# in order of appearance as one aligned table, then how many of the rows
# with a goal (met yes or no; "-" is a figure reported for information) meet
# it, and which do not.
set -euo pipefail
awk -F'|' '
	{ i = index($0, "BENCHROW ") }
	i == 0 { next }
	{
		line = substr($0, i + 9); n = split(line, f, "|")
		if (n != 5) { printf "benchtable: not figure|baseline|ratio|goal|met: %s\n", line > "/dev/stderr"; next }
		rows++
		for (c = 1; c <= 5; c++) {
			gsub(/^[ \t]+|[ \t]+$/, "", f[c]); cell[rows, c] = f[c]
			if (length(f[c]) > w[c]) w[c] = length(f[c])
		}
		if (f[5] == "yes") met++
		if (f[5] == "yes" || f[5] == "no") goals++
		if (f[5] == "no") missed = missed (missed == "" ? "" : "; ") f[1]
	}
	END {
		split("figure|baseline|ratio|goal|met", h, "|")
		for (c = 1; c <= 5; c++) if (length(h[c]) > w[c]) w[c] = length(h[c])
		for (c = 1; c <= 5; c++) printf "%-*s%s", w[c], h[c], (c < 5 ? "  " : "\n")
		for (c = 1; c <= 5; c++) { s = ""; for (k = 0; k < w[c]; k++) s = s "-"; printf "%s%s", s, (c < 5 ? "  " : "\n") }
		for (r = 1; r <= rows; r++)
			for (c = 1; c <= 5; c++) printf "%-*s%s", w[c], cell[r, c], (c < 5 ? "  " : "\n")
		printf "%d of %d goals met (%d rows)\n", met, goals, rows
		if (missed != "") printf "not met: %s\n", missed
	}
' "$@" | sed 's/ *$//'
