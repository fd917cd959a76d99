#!/usr/bin/env bash
# Metrics where users look for them: TensorBoard event files read back by the tensorboard
# package (each step once, also after a run fails and resumes), `spartan runs summary` and
# `spartan runs plot` (PNG pictures drawn by gnuplot).
# usage: runs.sh SPARTAN FIXTURES PYTHON   (PYTHON: the project's venv, with tensorboard)
set -euo pipefail
spartan="$1"; fixtures="$2"; python="$3"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMP_NUM_THREADS=1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! "$python" -c "import tensorboard" 2>/dev/null; then
  echo "skipped: $python has no tensorboard package (scripts/setup installs it)"; exit 77
fi
cli_workdir
fail() { echo "FAIL: $*" >&2; exit 1; }
is_png() { [[ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]]; }

stoppable_run 8
cat >> c.toml <<TOML
[eval]
every = 2
[checkpoint]
every = 3
TOML
# SPP: killed by an injected failure at step 5 (steps 1-4 logged, checkpoint at 3), then resumed.
spp=(train --config c.toml --set run.name=spp --set adapter.method=spp --set optim.lr=4e-3)
SPARTAN_FAULT=throw-rank0=5 "$spartan" "${spp[@]}" > spp.1.log 2>&1 && fail "the run did not fail"
grep -q '"step":4' runs/spp/metrics.jsonl || fail "step 4 was not logged before the failure"
"$spartan" "${spp[@]}" > spp.2.log
grep -q "resumed from .*step-00000003" spp.2.log || fail "no resume: $(cat spp.2.log)"
"$python" "$here/golden/read_tensorboard.py" runs/spp 8 eval/loss spp/zeros_lost
grep -o '"spp_zeros_lost":[0-9]*' runs/spp/metrics.jsonl | grep -qv ':0$' \
  && fail "SPP lost zeros: $(grep -o '"spp_zeros_lost":[0-9]*' runs/spp/metrics.jsonl)"
# SoRA with a rising xi: its gate scalars and the curve's points.
"$spartan" train --config c.toml --set run.name=sora --set adapter.method=sora \
  --set adapter.sora.schedule=linear --set adapter.sora.max_lambda=0.01 \
  --set adapter.sora.lambda_num=2 > sora.log
"$python" "$here/golden/read_tensorboard.py" runs/sora 8 sora/gate_nonzero sora/xi train/gate_lr \
  xi_phase/train_loss xi_phase/eval_loss
# run.tensorboard = false: metrics.jsonl alone.
"$spartan" train --config c.toml --set run.name=plain --set run.tensorboard=false > plain.log
[[ ! -e runs/plain/tb ]] || fail "run.tensorboard = false wrote runs/plain/tb"

# The table: one row per run, finished, 8 steps, the held-out perplexity train printed.
"$spartan" runs summary runs > table.txt
cat table.txt
[[ $(wc -l < table.txt) == 4 ]] || fail "expected a header and 3 rows"
for run in plain sora spp; do
  grep -E "^$run " table.txt | grep -q " 8 .* done$" || fail "$run: not 8 steps, done"
done
ppl=$(awk '/^after training/ {print $NF}' spp.2.log)
grep -E "^spp +spp " table.txt | grep -q " $ppl " || fail "spp: held-out ppl $ppl not in the table"
"$spartan" runs summary runs/spp runs/sora --markdown > table.md
head -n 2 table.md | tail -n 1 | grep -q '^| --- | --- | --- | ---: |' || fail "markdown: $(cat table.md)"
[[ $(wc -l < table.md) == 4 ]] || fail "markdown: expected 4 lines"

# Plots: PNG files; the comparison refuses to overwrite a file.
"$spartan" runs plot runs/spp runs/sora --compare compare.png > plots.txt
for f in runs/spp/plots/loss.png runs/sora/plots/loss.png runs/sora/plots/sora_xi_curve.png \
         compare.png; do
  is_png "$f" || fail "$f is not a PNG"
done
[[ ! -e runs/spp/plots/sora_xi_curve.png ]] || fail "an SPP run has no xi curve"
set +e
"$spartan" runs plot runs/spp --compare compare.png > out.txt 2>&1; rc=$?
set -e
[[ $rc == 2 ]] && grep -q "spartan: error: .*compare.png exists" out.txt \
  || fail "overwrote compare.png (rc $rc): $(cat out.txt)"
mkdir empty
set +e
"$spartan" runs summary empty > out.txt 2>&1; rc=$?
set -e
[[ $rc == 2 ]] && grep -q "spartan: error: no run in empty" out.txt || fail "$(cat out.txt)"
# A run folder edited by hand: the table shows what it can, the plot refuses in one line.
mkdir odd
echo '{"status": 5, "method": [], "trainable_parameters": "many"}' > odd/summary.json
printf '{"step": "x"}\nnot json\n{"step": 2, "loss": "nan", "event": 3}\n' > odd/metrics.jsonl
"$spartan" runs summary odd > out.txt 2>&1 || fail "runs summary of an odd run: $(cat out.txt)"
grep -qE "^odd +- +- +- +- +0 .*unfinished$" out.txt || fail "odd run: $(cat out.txt)"
set +e
"$spartan" runs plot odd > out.txt 2>&1; rc=$?
set -e
[[ $rc == 1 ]] && grep -q "spartan: error: nothing to plot" out.txt || fail "$(cat out.txt)"
echo "runs: TensorBoard, summary and plots as expected"
