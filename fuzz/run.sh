#!/usr/bin/env bash
# Builds every fuzz target (cargo-fuzz, nightly) and runs each for SECONDS (default 20), one
# after the other, from the seed corpus in fuzz/corpus/<target>. Prints the executions per
# target and fails if any target crashes, hangs or runs out of memory (the reproducer is kept in
# fuzz/artifacts/<target>/). New corpus entries go to a scratch directory removed at the end, so
# the committed seeds stay as they are.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain (fails saying so when it is missing) and cargo-fuzz (installed
# with `cargo install --locked cargo-fuzz` when missing).
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-20}"
shift || true
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz/run.sh: SECONDS must be a positive whole number, got '$secs'" >&2
  exit 2
fi

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz/run.sh: FAILED: the nightly Rust toolchain is not installed; cargo-fuzz needs it" >&2
  echo "  (rustup toolchain install nightly). The fuzz targets were NOT run." >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: cargo-fuzz is missing; installing it (cargo install --locked cargo-fuzz)"
  cargo install --locked cargo-fuzz
fi

# cargo fuzz has no --locked: refuse a Cargo.lock that would have to change, as CI does.
cargo +nightly metadata --locked --format-version 1 >/dev/null

# 16 codegen units: the build (the whole crate graph with sanitizer instrumentation) takes a
# fraction of the time of cargo-fuzz's default of 1, for a slightly slower fuzz run.
build_start=$(date +%s)
cargo +nightly fuzz build --codegen-units 16
echo "fuzz build: $(($(date +%s) - build_start)) s"

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/orly-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/tmp"

failed=()
printf '%-18s %12s  %s\n' target executions result
for t in "${targets[@]}"; do
  mkdir -p "$scratch/corpus/$t" "corpus/$t"
  log="$scratch/$t.log"
  # -timeout: one input running over 10 s is a hang; -rss_limit_mb: memory bound per target.
  if TMPDIR="$scratch/tmp" cargo +nightly fuzz run --codegen-units 16 "$t" \
    "$scratch/corpus/$t" "corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed+=("$t")
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  printf '%-18s %12s  %s\n' "$t" "${execs:-?}" "$result"
  if [ "$result" != ok ]; then
    echo "---- $t: last lines of its log ----"
    tail -n 60 "$log"
    echo "---- reproduce: cd fuzz && cargo +nightly fuzz run $t artifacts/$t/<file> ----"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz/run.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets, ${secs} s each, no crash"
