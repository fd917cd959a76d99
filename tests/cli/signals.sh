#!/usr/bin/env bash
# Stopping on request and failing ranks, through the executable:
#  - SIGTERM to a 1-rank run, and to one rank of a TP=2 run: every rank stops at the next step
#    boundary after a checkpoint, exit code 75; the same command resumes and ends with the same
#    losses as a run that was never stopped;
#  - a rank that throws: every rank exits within seconds, nonzero, with the rank's error;
#  - a rank that hangs: its peer gives up after parallel.timeout_s with an error naming the
#    collective, and the job ends.
set -euo pipefail
spartan="$1"; fixtures="$2"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
cli_workdir
trap 'pkill -f "output_dir=$dir" 2>/dev/null || true; rm -rf "$dir"' EXIT
stoppable_run 120
fail() { echo "FAIL: $*"; exit 1; }

for layout in 1 tp2; do
  launch=("$spartan"); sets=(--set run.name=stopped-$layout --set "run.output_dir=$dir/runs")
  [[ $layout == tp2 ]] && launch=(mpirun --oversubscribe -np 2 "$spartan") &&
    sets+=(--set parallel.tp=2)
  "${launch[@]}" train --config c.toml "${sets[@]/stopped/straight}" > straight.log
  "${launch[@]}" train --config c.toml "${sets[@]}" > s.log 2> s.err &
  job=$!
  for _ in $(seq 1 300); do grep -q "step 5/" s.log 2>/dev/null && break; sleep 0.1; done
  # SIGTERM to one rank only (the newest spartan process of this run).
  kill -TERM "$(pgrep -n -f "spartan train.*run.name=stopped-$layout")"
  rc=0; wait $job || rc=$?
  [[ $rc == 75 ]] || { cat s.err; fail "$layout: exit code $rc, expected 75"; }
  grep -q "spartan: stopped by signal 15 after step" s.err || fail "$layout: no stop message"
  ! pgrep -f "run.name=stopped-$layout" > /dev/null || fail "$layout: a rank is still running"
  step=$(cat runs/stopped-$layout/checkpoints/latest)
  "${launch[@]}" train --config c.toml "${sets[@]}" > r.log
  grep -q "resumed from .*$step" r.log || fail "$layout: no resume from $step"
  diff <(last_losses runs/straight-$layout/metrics.jsonl) <(last_losses runs/stopped-$layout/metrics.jsonl) \
    || fail "$layout: final losses differ from the run that was never stopped"
done

# A rank that throws: the whole job ends quickly with that rank's error.
start=$SECONDS
rc=0
SPARTAN_FAULT=throw-rank1=3 timeout 60 mpirun --oversubscribe -np 2 "$spartan" train \
  --config c.toml --set parallel.tp=2 --set run.name=thrown > t.log 2> t.err || rc=$?
(( rc != 0 && rc != 124 )) || fail "a throwing rank: exit code $rc"
(( SECONDS - start < 30 )) || fail "a throwing rank: took $((SECONDS - start)) s"
grep -q "spartan: error: injected failure (SPARTAN_FAULT) at step 3, rank 1 (pp 0, dp 0, tp 1)" \
  t.err || { cat t.err; fail "a throwing rank: no error line"; }

# A rank that hangs (stops calling MPI): the other one times out in its next collective.
start=$SECONDS
rc=0
SPARTAN_FAULT=hang-rank1=3 timeout 120 mpirun --oversubscribe -np 2 "$spartan" train \
  --config c.toml --set parallel.tp=2 --set parallel.timeout_s=3 --set run.name=hung \
  > h.log 2> h.err || rc=$?
(( rc != 0 && rc != 124 )) || { cat h.err; fail "a hanging rank: exit code $rc"; }
(( SECONDS - start < 60 )) || fail "a hanging rank: took $((SECONDS - start)) s"
grep -Eq "spartan: error: rank 0 of 2 on [^ ]+ waited [0-9]+ s in [a-z_]+ over the '[a-z]+' \
group \(peer: rank 1 on [^ ]+\) without progress: a peer failed, hangs or cannot be reached, \
parallel.timeout_s" h.err ||
  { cat h.err; fail "a hanging rank: no timeout error"; }
! pgrep -f "run.name=hung" > /dev/null || fail "a hanging rank: a rank is still running"
echo ok
