#!/usr/bin/env bash
# A real Slurm on this machine (scripts/slurm-local: munged, slurmctld, slurmd on localhost, a
# node with this machine's CPUs). For each launcher of `spartan slurm` (srun with PMIx, mpirun
# inside the allocation): the generated script runs a 2-rank TP fine-tune; `scancel --signal=USR1`
# makes it save and exit 75; the script requeues the job; the second start resumes from the
# checkpoint and finishes with the same final losses as a run that was never stopped. Every
# daemon and job started here is gone at the end.
set -euo pipefail
spartan="$1"; fixtures="$2"; slurm_local="$3"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# slurmd starts jobs as their user, so it runs as root; CI does. Others see the test skipped.
[[ $(id -u) == 0 ]] || { echo "skipped: the one-node Slurm needs root"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
cli_workdir
cleanup() {
  [[ -n ${SLURM_CONF:-} ]] && scancel --full --signal=KILL --user=root 2>/dev/null || true
  "$slurm_local" stop "$dir/slurm" || true
  pkill -f "output_dir=$dir" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  [[ -n ${out:-} && -f $dir/$out ]] && grep -v "^step" "$dir/$out"
  for f in "$dir"/slurm/log/slurm{ctld,d}.log; do [[ -f $f ]] && tail -n 30 "$f"; done
  exit 1
}

export "$("$slurm_local" start "$dir/slurm" | grep '^SLURM_CONF=')"
job_field() { scontrol show job "$1" | grep -o "$2=[^ ]*" | cut -d= -f2; }
job_is() { [[ $(job_field "$1" JobState) == "$2" ]]; }
wait_for() {  # wait_for <seconds> <command...>: until the command succeeds
  local limit=$1; shift
  for _ in $(seq 1 $((limit * 5))); do "$@" && return 0; sleep 0.2; done
  return 1
}

stoppable_run 150 '[parallel]' 'tp = 2'
mpirun --oversubscribe -np 2 "$spartan" train --config c.toml --set run.name=straight > straight.log

for launcher in ${LAUNCHERS:-srun mpirun}; do
  name=slurm-$launcher
  "$spartan" slurm c.toml --nodes 1 --gpus-per-node 0 --launcher "$launcher" \
    --set run.name=$name --out $name.sbatch > /dev/null
  job=$(sbatch --parsable $name.sbatch)
  out=slurm-$name-$job.out
  wait_for 120 grep -q "step 5/" "$out" 2> /dev/null || fail "$launcher: the job did not start"
  scancel --signal=USR1 $([[ $launcher == mpirun ]] && echo --batch) "$job"
  wait_for 60 grep -q "requeueing job $job" "$out" || fail "$launcher: no requeue"
  # The requeued job waits as long as a killed job's credential stays revoked: 10 s with
  # scripts/slurm-local's cred_expire (120 s by default).
  wait_for 30 job_is "$job" PENDING || fail "$launcher: not pending"
  wait_for 120 job_is "$job" COMPLETED ||
    fail "$launcher: the requeued job did not complete ($(job_field "$job" JobState))"
  [[ $(job_field "$job" Restarts) == 1 ]] || fail "$launcher: restarts $(job_field "$job" Restarts)"
  grep -q "stopped by signal 10 after step" "$out" || fail "$launcher: no stop on USR1"
  grep -q "resumed from .*step-" "$out" || fail "$launcher: the second start did not resume"
  grep -q "trained to step 150" "$out" || fail "$launcher: did not finish"
  diff <(last_losses runs/straight/metrics.jsonl) <(last_losses runs/$name/metrics.jsonl) ||
    fail "$launcher: final losses differ from the run that was never stopped"
done
echo ok
