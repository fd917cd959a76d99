#!/usr/bin/env bash
# Several hosts for real: two network namespaces on this machine (scripts/cluster-local), TCP
# between them, shared memory inside each, Open MPI's daemons started on each host by its
# remote-launch agent. Through `spartan launch --hosts h1:2,h2:2`:
#  - TP=2 x DP=2 (each TP group inside a host, DP across): the losses equal the one-host run bit
#    for bit, and the bytes crossing the hosts' cables over 8 more steps are DP's payload (TP's,
#    30 times larger, stays inside the hosts);
#  - TP=2 x PP=2 (a stage per host): equal losses, the crossing bytes are the pipeline's;
#  - a host lost mid-run (its cable cut): no hang, an error naming the collective and the peer,
#    the checkpoints intact; resumed on the remaining host as TP=2 alone, the run ends with the
#    losses of an uninterrupted run within the resharding tolerance;
#  - a host that lacks the run folder, one whose own storage has a folder at that path, one
#    without the model: one error line naming the host.
set -euo pipefail
spartan="$1"; fixtures="$2"; cluster_local="$3"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
cli_workdir
cleanup() {
  "$cluster_local" stop "$dir/cluster" > /dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

rc=0; "$cluster_local" start "$dir/cluster" 2 > cluster.env || rc=$?
[[ $rc == 77 ]] && { cat cluster.env; echo "skipped: no network namespaces here"; exit 77; }
[[ $rc == 0 ]] || { cat cluster.env; fail "cluster-local start: exit code $rc"; }
export "$(grep '^OMPI_MCA_plm_rsh_agent=' cluster.env)"
# Open MPI's session folders (/tmp/ompi.<host>.<uid> by default) go into the scratch folder.
mkdir -p "$dir/ompi" && export OMPI_MCA_orte_tmpdir_base="$dir/ompi"
on() { local host=$1; shift; "$cluster_local" run "$dir/cluster" "$host" "$@"; }
crossed() { "$cluster_local" bytes "$dir/cluster" h2; }  # everything h2 sent and received
launch() {  # launch <log> <args...>: spartan launch from h1 over both hosts
  local log=$1; shift
  on h1 "$spartan" launch c.toml --oversubscribe --iface cl0 "$@" > "$log" 2>&1
}
losses() { grep -o '"loss":[^,]*' "$1" | cut -d: -f2; }
# The growth of a group's payload counter (rank 0's, bytes) between two steps of a run.
payload() {  # payload <metrics> <group> <from step> <to step>
  local a b
  a=$(grep "\"step\":$3," "$1" | grep -o "\"$2\":[0-9]*" | cut -d: -f2)
  b=$(grep "\"step\":$4," "$1" | grep -o "\"$2\":[0-9]*" | cut -d: -f2)
  echo $((b - a))
}

stoppable_run 12 '[parallel]' 'tp = 2' 'dp = 2' 'timeout_s = 10'
sed -i 's/method = "lora"/method = "spp"/' c.toml

# TP=2 x DP=2. The same layout on one host, then across two: the same losses, bit for bit (a
# 2-rank reduction adds in the same order over TCP as over shared memory).
mpirun --oversubscribe -np 4 "$spartan" train --config c.toml --set run.name=one-host > one.log
b0=$(crossed)
launch short.log --hosts h1:2,h2:2 --set run.name=short --set optim.max_steps=4 ||
  { cat short.log; fail "TP=2 x DP=2 across hosts"; }
b1=$(crossed)
launch long.log --hosts h1:2,h2:2 --set run.name=long || { cat long.log; fail "TP=2 x DP=2"; }
b2=$(crossed)
grep -q -- "--mca btl_tcp_if_include cl0 --mca oob_tcp_if_include cl0" long.log ||
  fail "--iface did not reach mpirun"
diff <(losses runs/one-host/metrics.jsonl) <(losses runs/long/metrics.jsonl) ||
  fail "TP=2 x DP=2: the losses across hosts differ from one host"
# Eight steps more cross the cables as h2's DP payload sent and received: 2 x 2 ranks x rank 0's
# count, plus TCP/IP headers and Open MPI's fragment headers.
wire=$(( (b2 - b1) - (b1 - b0) ))
dp=$(( 4 * $(payload runs/long/metrics.jsonl dp 4 12) ))
tp=$(( 4 * $(payload runs/long/metrics.jsonl tp 4 12) ))
echo "TP=2 x DP=2, steps 5-12: $wire bytes crossed; DP payload $dp, TP payload $tp (in-host)"
(( wire >= dp && wire <= dp * 13 / 10 + 16384 )) ||
  fail "crossing bytes $wire are not DP's payload $dp (TP's is $tp)"

# TP=2 x PP=2: stage 0 on h1, stage 1 on h2; the activations and their gradients cross.
mpirun --oversubscribe -np 4 "$spartan" train --config c.toml --set parallel.dp=1 \
  --set parallel.pp=2 --set run.name=pp-one-host > pp-one.log
b0=$(crossed)
launch pp-short.log --hosts h1:2,h2:2 --set parallel.dp=1 --set parallel.pp=2 \
  --set run.name=pp-short --set optim.max_steps=4 || { cat pp-short.log; fail "PP across hosts"; }
b1=$(crossed)
launch pp.log --hosts h1:2,h2:2 --set parallel.dp=1 --set parallel.pp=2 --set run.name=pp ||
  { cat pp.log; fail "TP=2 x PP=2 across hosts"; }
b2=$(crossed)
diff <(losses runs/pp-one-host/metrics.jsonl) <(losses runs/pp/metrics.jsonl) ||
  fail "TP=2 x PP=2: the losses across hosts differ from one host"
wire=$(( (b2 - b1) - (b1 - b0) ))
pp=$(( 2 * $(payload runs/pp/metrics.jsonl pp 4 12) ))  # rank 0's sends and receives, x 2 ranks
echo "TP=2 x PP=2, steps 5-12: $wire bytes crossed; pipeline payload $pp"
(( wire >= pp && wire <= pp * 13 / 10 + 16384 )) ||
  fail "crossing bytes $wire are not the pipeline's payload $pp"

# A host lost: h2's cable is cut at step 20 of 80. The ranks on h1 wait in an all-reduce until
# parallel.timeout_s (10 s), name it and the peers on h2; mpirun cannot reach h2's daemon to
# end the job, so `spartan launch` stops it. Nothing hangs.
mpirun --oversubscribe -np 4 "$spartan" train --config c.toml --set optim.max_steps=80 \
  --set run.name=straight > straight.log
( rc=0; launch lost.log --hosts h1:2,h2:2 --set optim.max_steps=80 --set checkpoint.every=5 \
    --set run.name=lost || rc=$?; echo $rc > lost.rc ) &
for _ in $(seq 1 300); do grep -q "^step 20/" lost.log 2> /dev/null && break; sleep 0.1; done
grep -q "^step 20/" lost.log || { cat lost.log; fail "the run across hosts did not reach step 20"; }
"$cluster_local" link "$dir/cluster" h2 down
start=$SECONDS
for _ in $(seq 1 600); do [[ -s lost.rc ]] && break; sleep 0.1; done
took=$((SECONDS - start))
[[ -s lost.rc ]] || { cat lost.log; fail "the job hangs 60 s after losing a host"; }
[[ $(cat lost.rc) != 0 ]] || fail "the job lost a host and exited 0"
# The cut stops whichever collective comes next: the DP all-reduce of the gradients, the
# world's of the loss, one around a checkpoint.
grep -Eq "^spartan: error: rank [01] of 4 on h1 waited 1[0-9] s in [a-z_ -]+ over the \
'[a-z]+' group \(peers?: [^)]*rank [23] on h2" lost.log ||
  { cat lost.log; fail "no error naming the collective and the peer"; }
echo "host lost: the job ended $took s after the cut (parallel.timeout_s = 10)"
"$cluster_local" kill "$dir/cluster" h2
"$spartan" ckpt info runs/lost > inspect.log ||
  { cat inspect.log; fail "the last checkpoint is damaged"; }
# Resumed on h1 alone as TP=2 (DP=1): the same global batch in two micro-batches.
on h1 "$spartan" launch c.toml --oversubscribe --hosts h1:2 --set parallel.dp=1 \
  --set optim.max_steps=80 --set checkpoint.every=5 --set run.name=lost > resumed.log 2>&1 ||
  { cat resumed.log; fail "resume on the remaining host"; }
grep -q "resumed from .*step-" resumed.log || fail "the remaining host did not resume"
grep -q "trained to step 80" resumed.log || fail "the resumed run did not finish"
paste <(last_losses runs/straight/metrics.jsonl) <(last_losses runs/lost/metrics.jsonl) |
  awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $2) bad = 1; n++ }
       END { exit (bad || n != 5) }' ||
  { paste <(last_losses runs/straight/metrics.jsonl) <(last_losses runs/lost/metrics.jsonl);
    fail "resumed on one host: the final losses differ from the uninterrupted run"; }
"$cluster_local" link "$dir/cluster" h2 up

# A host that does not mount the run folder, then one without the model: one line names it.
expect_host_error() {  # expect_host_error <what> <log>
  local rc=0
  launch "$2" --hosts h1:2,h2:2 --set run.name=hidden || rc=$?
  [[ $rc == 1 || $rc == 2 ]] || { cat "$2"; fail "$1: exit code $rc"; }
  [[ $(grep -c "^spartan: error:" "$2") == 1 ]] || { cat "$2"; fail "$1: not one error line"; }
  grep -q "^spartan: error: $1 on h2 (ranks 2, 3 of 4; the other ranks can)" "$2" ||
    { cat "$2"; fail "$1: the error does not name h2"; }
}
local_runs=$("$cluster_local" hide "$dir/cluster" h2 "$dir/runs")
expect_host_error "cannot write to the run folder $dir/runs/hidden that rank 0 made" hidden-run.log
# h2's own storage has a folder at that path (a node-local /scratch): not the same folder.
mkdir -p "$local_runs/hidden"
expect_host_error "the run folder $dir/runs/hidden is not the one rank 0 made" local-run.log
"$cluster_local" hide "$dir/cluster" h2 "$dir/base"  # checked before the run folder is made
expect_host_error "cannot read config.json" hidden-model.log
echo ok
