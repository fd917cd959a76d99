#!/usr/bin/env bash
# `spartan launch` and `spartan slurm`, through the executable:
#  - dry-run mpirun commands for one node, 2 nodes x 8 and 8 nodes x 8 (a hostfile), exactly;
#  - the checks: a TP group across nodes, fewer GPUs than ranks, too few nodes, a missing model;
#  - sbatch scripts for srun and for mpirun, exactly where they depend on the layout;
#  - `spartan launch` for real: a 2-rank TP run on this machine, and USR1 passed on to its ranks.
set -euo pipefail
spartan="$1"; fixtures="$2"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
cli_workdir
exe=$(readlink -f "$spartan")
fail() { echo "FAIL: $*"; exit 1; }
# Runs spartan with only the environment the command may read (no NCCL_* or OMPI_MCA_* of the
# caller).
unset_passed=()
for name in $(env | grep -oE '^(NCCL|OMPI_MCA)_[A-Za-z0-9_]*' || true); do
  unset_passed+=(-u "$name")
done
run() { env "${unset_passed[@]}" "$spartan" "$@"; }
expect() {  # expect "<expected stdout>" <spartan args...>
  local want="$1"; shift
  local got; got=$(run "$@" 2> err) || { cat err; fail "spartan $*: exit code $?"; }
  [[ "$got" == "$want" ]] || { printf 'want: %s\ngot:  %s\n' "$want" "$got"; fail "spartan $*"; }
}
expect_error() {  # expect_error "<error line>" <spartan args...>
  local want="$1"; shift
  local rc=0; run "$@" > out 2> err || rc=$?
  [[ $rc == 2 ]] || { cat out err; fail "spartan $*: exit code $rc, expected 2"; }
  [[ "$(cat err)" == "$want" ]] || { printf 'want: %s\ngot:  %s\n' "$want" "$(cat err)";
    fail "spartan $*"; }
}

printf '[parallel]\ntp = 2\n' > one.toml
printf '[parallel]\ntp = 8\ndp = 2\n' > two.toml
printf '[parallel]\ntp = 8\npp = 4\ndp = 2\nbackend = "nccl"\n' > eight.toml
for i in 1 2 3 4 5 6 7 8; do echo "node$i slots=8  # 8 GPUs"; done > hosts

# One node, this machine (no GPUs here).
expect "mpirun -np 2 --map-by ppr:2:node:PE=1 --bind-to core -x OMP_NUM_THREADS=1 $exe train \
--config $dir/one.toml" launch one.toml --dry-run
# 2 nodes x 8 GPUs; NCCL settings of the caller are passed on, sorted.
want="mpirun -np 16 --host n1:8,n2:8 --map-by ppr:8:node:PE=4 --bind-to core \
-x OMP_NUM_THREADS=4 -x SPARTAN_GPU_PER_RANK=1 -x NCCL_DEBUG -x NCCL_IB_HCA $exe train \
--config $dir/two.toml --set optim.lr=1e-4"
got=$(env "${unset_passed[@]}" NCCL_IB_HCA=mlx5 NCCL_DEBUG=INFO "$spartan" launch two.toml \
  --hosts n1:8,n2:8 --gpus-per-node 8 --threads-per-rank 4 --set optim.lr=1e-4 --dry-run \
  2> /dev/null)
[[ "$got" == "$want" ]] || { printf 'want: %s\ngot:  %s\n' "$want" "$got"; fail "2 x 8"; }
# --iface: one interface for Open MPI's TCP and out-of-band traffic and for NCCL; the caller's
# Open MPI settings reach every rank too.
want="mpirun -np 16 --host n1:8,n2:8 --map-by ppr:8:node:PE=1 --bind-to core \
--mca btl_tcp_if_include ib0 --mca oob_tcp_if_include ib0 -x OMP_NUM_THREADS=1 \
-x SPARTAN_GPU_PER_RANK=1 -x NCCL_SOCKET_IFNAME=ib0 -x OMPI_MCA_btl_tcp_eager_limit $exe train \
--config $dir/two.toml"
got=$(env "${unset_passed[@]}" NCCL_SOCKET_IFNAME=eth0 OMPI_MCA_btl_tcp_eager_limit=65536 \
  "$spartan" launch two.toml --hosts n1:8,n2:8 --gpus-per-node 8 --iface ib0 --dry-run \
  2> /dev/null)
[[ "$got" == "$want" ]] || { printf 'want: %s\ngot:  %s\n' "$want" "$got"; fail "--iface"; }
# 8 nodes x 8 GPUs from a hostfile: TP 8 x PP 4 x DP 2 = 64 ranks.
expect "mpirun -np 64 --hostfile $dir/hosts --map-by ppr:8:node:PE=1 --bind-to core \
-x OMP_NUM_THREADS=1 -x SPARTAN_GPU_PER_RANK=1 $exe train --config $dir/eight.toml" \
  launch --config eight.toml --hostfile hosts --gpus-per-node 8 --dry-run
# More ranks than cores: no binding.
expect "mpirun -np 2 --oversubscribe --map-by ppr:2:node --bind-to none -x OMP_NUM_THREADS=1 \
$exe train --config $dir/one.toml" launch one.toml --oversubscribe --dry-run
grep -q "spartan: note: model.path is not set, one.toml" err || fail "no note on the model"

# The checks.
expect_error "spartan: error: a tensor-parallel group of 8 ranks would span two nodes (4 ranks \
per node), --hosts, use nodes with a multiple of parallel.tp ranks" \
  launch two.toml --hosts a:4,b:4,c:4,d:4 --gpus-per-node 4 --dry-run
expect_error "spartan: error: 8 ranks per node but 4 GPUs per node (one GPU per rank), --hosts, \
use more nodes or a smaller layout" launch two.toml --hosts a:8,b:8 --gpus-per-node 4 --dry-run
expect_error "spartan: error: 64 ranks (tp 8 x pp 4 x dp 2) need 8 nodes of 8 ranks, there are \
2, --hosts, add nodes or use a smaller layout" \
  launch eight.toml --hosts a:8,b:8 --gpus-per-node 8 --dry-run
expect_error "spartan: error: parallel.backend = \"nccl\" needs GPUs, the nodes have none, \
$dir/hosts, give --gpus-per-node, or use backend = \"mpi\"" \
  launch eight.toml --hostfile hosts --gpus-per-node 0 --dry-run
expect_error "spartan: error: hosts with different slot counts (a:8, b:4), --hosts, give every \
node the same number of ranks" launch two.toml --hosts a:8,b:4 --dry-run
expect_error "spartan: error: model.path is not set, one.toml, fix the path (relative paths are \
taken from the current folder)" launch one.toml

# sbatch scripts.
run slurm eight.toml --nodes 8 --gpus-per-node 8 --threads-per-rank 8 --partition gpu \
  --account proj --time 2-00:00:00 > srun.sbatch 2> /dev/null
for line in "#SBATCH --nodes=8" "#SBATCH --ntasks-per-node=8" "#SBATCH --cpus-per-task=8" \
  "#SBATCH --gpus-per-node=8" "#SBATCH --partition=gpu" "#SBATCH --account=proj" \
  "#SBATCH --time=2-00:00:00" "#SBATCH --signal=USR1@300" "#SBATCH --requeue" \
  "#SBATCH --chdir=$dir" "export SPARTAN_GPU_PER_RANK=1" \
  "srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=8 $exe train --config $dir/eight.toml" \
  '  scontrol requeue "$SLURM_JOB_ID"'; do
  grep -qxF -- "$line" srun.sbatch || { cat srun.sbatch; fail "srun script: no line '$line'"; }
done
run slurm one.toml --nodes 1 --gpus-per-node 0 --launcher mpirun --signal-before 60 \
  --out mpirun.sbatch > /dev/null 2>&1
[[ -x mpirun.sbatch ]] || fail "the script is not executable"
for line in "#SBATCH --signal=B:USR1@60" "#SBATCH --ntasks-per-node=2" \
  "mpirun -np 2 --map-by ppr:2:node:PE=1 --bind-to core -x OMP_NUM_THREADS $exe train --config \
$dir/one.toml &" "trap 'kill -USR1 \$launcher' USR1"; do
  grep -qxF -- "$line" mpirun.sbatch || { cat mpirun.sbatch; fail "mpirun script: no '$line'"; }
done
! grep -q "gpus-per-node" mpirun.sbatch || fail "a CPU job asks for GPUs"
# --iface in a script: exported for mpirun (and srun's ranks), NCCL's passed on by mpirun.
run slurm one.toml --nodes 1 --gpus-per-node 0 --launcher mpirun --iface ib0 > iface.sbatch \
  2> /dev/null
for line in "export OMPI_MCA_btl_tcp_if_include=ib0" "export OMPI_MCA_oob_tcp_if_include=ib0" \
  "export NCCL_SOCKET_IFNAME=ib0" "mpirun -np 2 --map-by ppr:2:node:PE=1 --bind-to core -x \
OMP_NUM_THREADS -x NCCL_SOCKET_IFNAME $exe train --config $dir/one.toml &"; do
  grep -qxF -- "$line" iface.sbatch || { cat iface.sbatch; fail "--iface script: no '$line'"; }
done
bash -n mpirun.sbatch && bash -n srun.sbatch || fail "a script is not valid bash"
expect_error "spartan: error: 64 ranks (tp 8 x pp 4 x dp 2) cannot be spread evenly over 3 \
nodes, --nodes 3, use a number of nodes that divides the ranks" \
  slurm eight.toml --nodes 3 --gpus-per-node 8
expect_error "spartan: error: the stop signal 300 s before the end does not fit in the time \
limit (--time 4:00), --signal-before, use a shorter --signal-before or a longer --time" \
  slurm one.toml --gpus-per-node 0 --time 4:00
expect_error "spartan: error: time limit '1-xx' is not in a Slurm time format, --time, write it \
as minutes, H:M:S or D-H:M:S" slurm one.toml --gpus-per-node 0 --time 1-xx

# For real: a 2-rank tensor-parallel run started by `spartan launch`.
qa_jsonl 40 > qa.jsonl
cat > run.toml <<TOML
[run]
output_dir = "$dir/runs"
$(tiny_model_toml)
[parallel]
tp = 2
$(qa_data_toml 128)
[optim]
global_batch_size = 4
max_steps = 4
TOML
"$spartan" model init --config run.toml --out base > /dev/null
"$spartan" launch run.toml --oversubscribe > launched.log 2>&1 || { cat launched.log; fail "launch"; }
head -n 1 launched.log | grep -q "^mpirun -np 2 --oversubscribe" || fail "no command printed"
grep -q "layout       2 ranks: dp 1 x pp 1 x tp 2" launched.log || fail "not 2 ranks"
grep -q "trained to step 4" launched.log || { cat launched.log; fail "the run did not finish"; }
# A signal sent to the launcher alone (a scheduler's USR1) reaches every rank through mpirun:
# checkpoint, exit code 75, which the launcher returns.
"$spartan" launch run.toml --oversubscribe --set optim.max_steps=400 --set run.log_every=1 \
  --set run.name=stopped > stopped.log 2>&1 &
launcher=$!
for _ in $(seq 1 300); do grep -q "^step 3/" stopped.log && break; sleep 0.1; done
grep -q "^step 3/" stopped.log ||
  { kill -TERM $launcher 2> /dev/null || true; cat stopped.log; fail "no step 3"; }
kill -USR1 $launcher
rc=0; wait $launcher || rc=$?
[[ $rc == 75 ]] || { cat stopped.log; fail "USR1 to the launcher: exit code $rc, expected 75"; }
grep -q "stopped by signal 10 after step" stopped.log ||
  { cat stopped.log; fail "no stop on USR1"; }
# TERM to the launcher (a scheduler's, `timeout`'s) saves a checkpoint the same way: mpirun would
# kill the ranks a second after a TERM, so the launcher sends the first one on as USR1.
"$spartan" launch run.toml --oversubscribe --set optim.max_steps=400 --set run.log_every=1 \
  --set run.name=stopped-term > stopped-term.log 2>&1 &
launcher=$!
for _ in $(seq 1 300); do grep -q "^step 3/" stopped-term.log && break; sleep 0.1; done
grep -q "^step 3/" stopped-term.log ||
  { kill -TERM $launcher 2> /dev/null || true; cat stopped-term.log; fail "TERM: no step 3"; }
kill -TERM $launcher
rc=0; wait $launcher || rc=$?
[[ $rc == 75 ]] ||
  { cat stopped-term.log; fail "TERM to the launcher: exit code $rc, expected 75"; }
grep -q "stopped by signal 10 after step" stopped-term.log || fail "TERM: no checkpoint and stop"
echo ok
