#!/usr/bin/env bash
# A real Slurm on this machine (scripts/slurm-local: munged, slurmctld, slurmd). For each
# launcher of `spartan slurm` (srun with PMIx, mpirun inside the allocation): the generated script
# runs a tensor-parallel fine-tune; `scancel --signal=USR1` makes it save and exit 75; the script
# requeues the job; the second start resumes from the checkpoint and finishes with the same final
# losses as a run that was never stopped. Every daemon and job started here is gone at the end.
#
#   slurm.sh SPARTAN FIXTURES SLURM_LOCAL               one node (this machine), TP=2
#   slurm.sh SPARTAN FIXTURES SLURM_LOCAL CLUSTER_LOCAL two nodes, each a host of
#                       scripts/cluster-local (a slurmd per host), TP=2 x DP=2 with DP across them
set -euo pipefail
spartan="$1"; fixtures="$2"; slurm_local="$3"; cluster_local="${4:-}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# slurmd starts jobs as their user, so it runs as root; CI does. Others see the test skipped.
[[ $(id -u) == 0 ]] || { echo "skipped: the local Slurm needs root"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
cli_workdir
cleanup() {
  [[ -n ${SLURM_CONF:-} ]] && on_h1 scancel --full --signal=KILL --user=root 2>/dev/null || true
  "$slurm_local" stop "$dir/slurm" || true
  [[ -n $cluster_local ]] && "$cluster_local" stop "$dir/cluster" > /dev/null 2>&1 || true
  pkill -f "output_dir=$dir" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
if [[ -z $cluster_local ]]; then
  nodes=1; layout=('[parallel]' 'tp = 2'); ranks=2
  on_h1() { "$@"; }
else
  nodes=2; layout=('[parallel]' 'tp = 2' 'dp = 2'); ranks=4
  rc=0; "$cluster_local" start "$dir/cluster" 2 > cluster.env || rc=$?
  [[ $rc == 77 ]] && { cat cluster.env; echo "skipped: no network namespaces here"; exit 77; }
  [[ $rc == 0 ]] || { cat cluster.env; echo "FAIL: cluster-local start: exit code $rc"; exit 1; }
  # Open MPI's session folders (/tmp/ompi.<host>.<uid> by default) go into the scratch folder.
  mkdir -p "$dir/ompi" && export OMPI_MCA_orte_tmpdir_base="$dir/ompi"
  # Slurm's commands reach slurmctld from a host: it listens on h1's address.
  on_h1() { "$cluster_local" run "$dir/cluster" h1 "$@"; }
fi
fail() {
  echo "FAIL: $*"
  [[ -n ${out:-} && -f $dir/$out ]] && grep -v "^step" "$dir/$out"
  for f in "$dir"/slurm/log/slurm*.log; do [[ -f $f ]] && tail -n 30 "$f"; done
  exit 1
}

export "$("$slurm_local" start "$dir/slurm" ${cluster_local:+"$dir/cluster"} | grep '^SLURM_CONF=')"
job_field() { on_h1 scontrol show job "$1" | grep -o "$2=[^ ]*" | cut -d= -f2; }
job_is() { [[ $(job_field "$1" JobState) == "$2" ]]; }
wait_for() {  # wait_for <seconds> <command...>: until the command succeeds
  local limit=$1; shift
  for _ in $(seq 1 $((limit * 5))); do "$@" && return 0; sleep 0.2; done
  return 1
}

stoppable_run 150 "${layout[@]}"
mpirun --oversubscribe -np $ranks "$spartan" train --config c.toml --set run.name=straight \
  > straight.log

for launcher in ${LAUNCHERS:-srun mpirun}; do
  name=slurm-$launcher
  "$spartan" slurm c.toml --nodes $nodes --gpus-per-node 0 --launcher "$launcher" \
    --set run.name=$name --out $name.sbatch > /dev/null
  job=$(on_h1 sbatch --parsable $name.sbatch)
  out=slurm-$name-$job.out
  wait_for 120 grep -q "step 5/" "$out" 2> /dev/null || fail "$launcher: the job did not start"
  on_h1 scancel --signal=USR1 $([[ $launcher == mpirun ]] && echo --batch) "$job"
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
  [[ $nodes == 1 ]] || grep -q "on h\[1-2\]" "$out" || fail "$launcher: not on both hosts"
  diff <(last_losses runs/straight/metrics.jsonl) <(last_losses runs/$name/metrics.jsonl) ||
    fail "$launcher: final losses differ from the run that was never stopped"
done
echo ok
