#!/bin/bash
# OpenMP wait policy on a busy and an idle machine (issue 14, item 5): 30 steps of
# `densefeat train --method dense` (max_len 32, the default data), first beside one CPU-bound
# process, then alone, in three arms interleaved:
#   auto     densefeat's own choice (PASSIVE when the load average is >= 0.5 at start);
#   spin     GOMP_SPINCOUNT=300000, libgomp's documented spin count with no policy set (a set
#            GOMP_SPINCOUNT also tells densefeat to leave waiting alone);
#   PASSIVE  OMP_WAIT_POLICY=PASSIVE.
# Each line: arm, machine state, repetition, wall and CPU seconds (GNU time).
# Usage: bash benchmarks/wait_policy.sh [REPS]   (from the repository root, densefeat installed)
set -euo pipefail
reps=${1:-2}
out=$(mktemp -d)
burner=
trap 'rm -rf "$out"; if [ -n "$burner" ]; then kill "$burner" 2>/dev/null || true; fi' EXIT
one() {  # arm state rep
  local env_=(LC_ALL=C)
  [ "$1" = spin ] && env_+=(GOMP_SPINCOUNT=300000)
  [ "$1" = PASSIVE ] && env_+=(OMP_WAIT_POLICY=PASSIVE)
  rm -rf "$out/run"
  /usr/bin/time -f "$1 $2 rep$3 wall %e s user %U s sys %S s" \
    env "${env_[@]}" densefeat train --method dense --max-steps 30 --out "$out/run" \
    --set data.max_len=32 --no-progress > /dev/null 2> "$out/err" || { cat "$out/err"; exit 1; }
  tail -1 "$out/err"
}
python3 -c "while True: pass" & burner=$!
sleep 60  # let the 1-minute load average see the burner (1 - 1/e of it)
for rep in $(seq "$reps"); do for arm in auto spin PASSIVE; do one "$arm" busy "$rep"; done; done
kill "$burner"; burner=
sleep 90  # and forget it
for rep in $(seq "$reps"); do for arm in auto spin PASSIVE; do one "$arm" idle "$rep"; done; done
