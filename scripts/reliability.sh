#!/usr/bin/env bash
# The fault, load and hostile-input suite at full size (make reliability):
# the scenarios of internal/reliability with RELIABILITY=full, then every
# fuzz target for FUZZTIME each. The figures measured go to
# internal/reliability/last-run.md and into RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
results=internal/reliability/last-run.md
targets=(
	lib/storage:FuzzSource
	lib/methods:FuzzStagePaths
	lib/staging:FuzzValidUsername
	lib/rucio:FuzzParseDID
	lib/rucio:FuzzParseTransferDone
	lib/events:FuzzDecodeRequest
	functions/stage:FuzzDecodeItems
	functions/stage:FuzzStageRequest
)
start=$(date +%s)

RELIABILITY=full RELIABILITY_RESULTS="$PWD/$results" "$GO" test -count=1 -timeout 40m -v ./internal/reliability

printf '\n## Fuzzing (go test -fuzz, %s per target)\n\n' "$FUZZTIME" >>"$results"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for t in "${targets[@]}"; do
	pkg=${t%%:*} name=${t##*:}
	echo "fuzz $name in ./$pkg for $FUZZTIME"
	if ! "$GO" test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" "./$pkg" >"$out" 2>&1; then
		cat "$out"
		echo "- $name (./$pkg): **failed**, see testdata/fuzz/$name" >>"$results"
		exit 1
	fi
	execs=$(grep -o 'execs: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)
	interesting=$(grep -o 'total: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)
	echo "- $name (./$pkg): $execs inputs, corpus of $interesting, no failure" | tee -a "$results"
done
printf '\nThe whole of make reliability took %d s.\n' $(($(date +%s) - start)) | tee -a "$results"

# RELIABILITY.md quotes the figures between its markers.
awk -v figs="$results" '
/<!-- figures:start -->/ { print; while ((getline l < figs) > 0) { if (l ~ /^# /) continue; sub(/^## /, "### ", l); print l }; skip = 1; next }
/<!-- figures:end -->/ { skip = 0 }
!skip' RELIABILITY.md >"$out" && cat "$out" >RELIABILITY.md
