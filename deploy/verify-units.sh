#!/usr/bin/env bash
# Checks the systemd units in deploy/systemd with `systemd-analyze verify`, installing nothing.
#
# Works where systemd is not PID 1 (CI containers): it verifies copies of the units in a
# temporary directory with --man=no. systemd-analyze insists that ExecStart= points at an
# executable; where /usr/local/bin/orly-* is not installed, the copies point at placeholder
# scripts in the temporary directory instead (and the script says so). Nothing outside the
# temporary directory is written, and it is removed at exit.
#
# systemd-analyze exits 0 on many problems it merely warns about (unknown keys, bad values
# "ignoring"), so any diagnostic it prints fails this script.
#
# Needs: systemd-analyze (Debian/Ubuntu package `systemd`).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
units_dir="$here/systemd"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "verify-units: systemd-analyze not found (apt-get install systemd)" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

units=()
for unit in "$units_dir"/*.service; do
  name="$(basename "$unit")"
  cp "$unit" "$tmp/$name"
  # Every absolute program a unit runs (ExecStart=, ExecReload=, ...), prefixes like '-' or '!'
  # removed.
  for prog in $(sed -n -E 's/^Exec[A-Za-z]*=[-@:+!]*(\/[^ ]+).*/\1/p' "$unit" | sort -u); do
    if [[ ! -x "$prog" ]]; then
      placeholder="$tmp/bin/$(basename "$prog")"
      printf '#!/bin/sh\nexit 0\n' >"$placeholder"
      chmod 755 "$placeholder"
      sed -i "s#=\([-@:+!]*\)$prog\b#=\1$placeholder#" "$tmp/$name"
      echo "verify-units: $name: $prog is not installed; verifying against a placeholder"
    fi
  done
  units+=("$tmp/$name")
done

if [[ ${#units[@]} -eq 0 ]]; then
  echo "verify-units: no units in $units_dir" >&2
  exit 1
fi

status=0
out="$(cd "$tmp" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "${units[@]}" 2>&1)" || status=$?
if [[ $status -ne 0 || -n "$out" ]]; then
  echo "$out" | sed "s#$tmp/##g" >&2
  echo "verify-units: FAILED (exit $status)" >&2
  exit 1
fi
echo "verify-units: ${#units[@]} units verified: $(cd "$units_dir" && echo *.service)"
