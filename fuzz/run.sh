#!/usr/bin/env bash
# `make fuzz`: runs each target FUZZ_SECONDS from its committed seeds (fuzz/corpus/<target>,
# never written to; new inputs go to fuzz/work/<target>, crashes to fuzz/artifacts/<target>),
# then prints one table: target, seconds, executions, executions per second, corpus size
# (libFuzzer's corpus at the end, seeds included) and crashes. Exits 1 when any target crashed.
#
# FUZZ_SANITIZER=none (the default) builds on stable Rust; any sanitizer needs nightly (-Z).
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
targets=${FUZZ_TARGETS:-authorization jwt jwks config lookup authenticator}
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=()
if [ "$sanitizer" != none ]; then
  toolchain=(+nightly)
fi

# One build for every target (the dependencies are shared), then each run finds it built.
if ! cargo "${toolchain[@]}" fuzz build --fuzz-dir fuzz -s "$sanitizer"; then
  echo "fuzz: the targets do not build" >&2
  exit 2
fi

rows=()
failed=""
for t in $targets; do
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  log="fuzz/work/$t.log"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  start=$EPOCHREALTIME
  echo "fuzz $t: $seconds s"
  cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz -s "$sanitizer" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  took=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  crashes=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - before ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed="$failed $t"
  fi
  rows+=("$(printf '| %-13s | %7s | %10s | %8s | %6s | %7s |' "$t" "$took" "${execs:-?}" "${rate:-?}" "${corpus:-?}" "$crashes")")
done

echo
echo "fuzz summary (FUZZ_SECONDS=$seconds, sanitizer $sanitizer; seconds include start-up and seed loading)"
printf '| %-13s | %7s | %10s | %8s | %6s | %7s |\n' target seconds execs execs/s corpus crashes
printf '| %-13s | %7s | %10s | %8s | %6s | %7s |\n' --- --- --- --- --- ---
printf '%s\n' "${rows[@]}"
if [ -n "$failed" ]; then
  echo "fuzz: crashes in$failed (inputs under fuzz/artifacts/; see fuzz/README.md)" >&2
  exit 1
fi
