#!/usr/bin/env bash
# SIGKILL at random moments: a run is killed again and again (one process, then under mpirun
# with TP=2, where the victim is mpirun itself, rank 0 or rank 1), restarted each time with the
# same command, until it finishes. Some kills land inside a checkpoint save (SPARTAN_FAULT
# kill-in-save), the others wherever the random delay falls: start-up, a step, a save, the
# export. The final adapter must equal an uninterrupted run's bit for bit, and metrics.jsonl
# must hold every step once with the uninterrupted run's losses; so must the TensorBoard event
# file, read by the tensorboard package when $SPARTAN_PYTHON (the venv's python) has it.
#
#   kill.sh SPARTAN FIXTURES [KILLS_PER_LAYOUT]     (seed: $SPARTAN_KILL_SEED, printed)
set -euo pipefail
spartan="$1"; fixtures="$2"; kills_wanted="${3:-8}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
cli_workdir
trap 'pkill -KILL -f "output_dir=$dir" 2>/dev/null || true; rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
# "step loss" for each training record of a metrics.jsonl (its keys are sorted).
step_losses() { grep '"loss":' "$1" | sed -E 's/.*"loss":([^,}]*).*"step":([0-9]+).*/\2 \1/'; }
seed="${SPARTAN_KILL_SEED:-$(date +%s)}"
RANDOM=$seed
echo "random seed $seed (SPARTAN_KILL_SEED=$seed reproduces the kill times)"

stoppable_run 32 "[checkpoint]" "every = 4" "keep = 2"

# Waits for the job, or kills a victim after `delay` tenths of a second; returns 0 when the job
# finished by itself with exit 0, 1 when it was killed.
run_or_kill() {  # delay victim command...
  local delay=$1 victim=$2; shift 2
  "$@" > run.log 2>&1 &
  local job=$! waited=0
  while ((waited < delay)) && kill -0 "$job" 2> /dev/null; do sleep 0.1; ((++waited)); done
  if ! kill -0 "$job" 2> /dev/null; then
    local rc=0; wait "$job" || rc=$?
    ((rc == 0)) || { cat run.log; fail "a run that was not killed failed (exit $rc)"; }
    return 0
  fi
  local pid=$job
  case $victim in
    rank0|rank1)
      # One of the two ranks (by process id; mpirun's own command line starts with "mpirun").
      local ranks=($(pgrep -f "^$spartan train .*output_dir=$dir" | sort -n))
      ((${#ranks[@]} >= 2)) && pid=${ranks[${victim#rank}]} ;;
  esac
  kill -KILL "$pid" 2> /dev/null || true
  wait "$job" 2> /dev/null || true
  # Open MPI tears the other rank down; leave nothing running before the restart.
  for _ in $(seq 1 100); do pgrep -f "output_dir=$dir" > /dev/null || break; sleep 0.1; done
  pkill -KILL -f "output_dir=$dir" 2> /dev/null || true
  return 1
}

total=0
for layout in 1 tp2; do
  launch=("$spartan"); sets=(--set "run.output_dir=$dir/runs")
  victims=(process)
  if [[ $layout == tp2 ]]; then
    launch=(mpirun --oversubscribe -np 2 "$spartan"); sets+=(--set parallel.tp=2)
    victims=(mpirun rank0 rank1)
  fi
  t0=$(date +%s%N)
  "${launch[@]}" train --config c.toml "${sets[@]}" --set run.name=straight-$layout > s.log
  tenths=$(( ($(date +%s%N) - t0) / 100000000 ))  # the whole run, in tenths of a second
  kills=0
  # Runs until enough kills have happened; a run that finishes first is checked, and the next
  # one starts from nothing.
  for round in 1 2 3 4; do
    ((kills < kills_wanted)) || break
    name=killed-$layout-$round
    cmd=("${launch[@]}" train --config c.toml "${sets[@]}" --set run.name=$name)
    # Two kills inside a save (after the shards, before the manifest), at steps 8 and 20.
    if ((round == 1)); then
      for step in 8 20; do
        if SPARTAN_FAULT=kill-in-save=$step "${cmd[@]}" > run.log 2>&1; then
          fail "$layout: the run survived kill-in-save=$step"
        fi
        pkill -KILL -f "output_dir=$dir" 2> /dev/null || true
        ((++kills))
      done
    fi
    # Random kills, 10% to 60% of an uninterrupted run's time after each start.
    for attempt in $(seq 1 40); do
      victim=${victims[RANDOM % ${#victims[@]}]}
      delay=$((tenths / 10 + RANDOM % (tenths / 2 + 1)))
      ((kills >= kills_wanted)) && delay=100000
      if run_or_kill "$delay" "$victim" "${cmd[@]}"; then break; fi
      ((++kills))
      echo "$layout: kill $kills ($victim after $((delay / 10)).$((delay % 10)) s)"
    done
    [[ -f runs/$name/adapter/adapter_model.safetensors ]] || fail "$name: the run never finished"
    cmp runs/straight-$layout/adapter/adapter_model.safetensors \
        runs/$name/adapter/adapter_model.safetensors || fail "$name: adapters differ"
    diff <(step_losses runs/straight-$layout/metrics.jsonl) \
         <(step_losses runs/$name/metrics.jsonl) ||
      fail "$name: metrics.jsonl differs from the uninterrupted run's (steps or losses)"
    if [[ -n "${SPARTAN_PYTHON:-}" ]] && "$SPARTAN_PYTHON" -c "import tensorboard" 2>/dev/null; then
      "$SPARTAN_PYTHON" "$(dirname "${BASH_SOURCE[0]}")/../golden/read_tensorboard.py" \
        runs/$name 32 || fail "$name: the TensorBoard file after the kills"
    fi
  done
  ((kills >= kills_wanted)) || fail "$layout: only $kills kills"
  echo "$layout: $kills kills, final adapter and every step's loss bit-identical"
  total=$((total + kills))
done
((total >= 10)) || fail "only $total kills"
echo "ok: $total kills"
