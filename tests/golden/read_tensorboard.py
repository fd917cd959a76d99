"""Reads a Spartan run's TensorBoard files with the tensorboard package's own readers and checks
them against the run's metrics.jsonl: every (tag, step) once, train/loss and eval/perplexity equal
to the logged values (float32), the steps 1..N. Used by tests/cli/runs.sh.

usage: read_tensorboard.py RUN_DIR STEPS [TAG ...]   (TAGs that must be present)
"""
import glob
import json
import math
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader

run, steps, required = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
files = sorted(glob.glob(f"{run}/tb/events.out.tfevents.*"))
assert len(files) == 1, f"expected one event file in {run}/tb, found {files}"

# The raw events, as TensorBoard's loader yields them (no purging of orphaned steps).
seen = {}
header = 0
for event in event_file_loader.EventFileLoader(files[0]).Load():
    if event.HasField("file_version"):
        header += 1
        assert event.file_version == "brain.Event:2", event.file_version
        continue
    for value in event.summary.value:
        key = (value.tag, event.step)
        assert key not in seen, f"{key} logged twice"
        seen[key] = value.simple_value
assert header == 1, f"{header} file_version events"

metrics = {}
with open(f"{run}/metrics.jsonl") as f:
    for line in f:
        record = json.loads(line)
        if "event" not in record:
            metrics[record["step"]] = record

acc = event_accumulator.EventAccumulator(run + "/tb")
acc.Reload()
tags = acc.Tags()["scalars"]
for tag in required + ["train/loss", "train/lr", "perf/tokens_per_s", "perf/memory_gib"]:
    assert tag in tags, f"{tag} not in {sorted(tags)}"
loss = acc.Scalars("train/loss")
assert [s.step for s in loss] == list(range(1, steps + 1)), [s.step for s in loss]
for s in loss:
    want = metrics[s.step]["loss"]
    assert math.isclose(s.value, want, rel_tol=1e-6), (s.step, s.value, want)
evals = [s.step for s in acc.Scalars("eval/perplexity")] if "eval/perplexity" in tags else []
want_evals = [k for k, r in sorted(metrics.items()) if "eval_ppl" in r]
assert evals == want_evals, (evals, want_evals)
for s in acc.Scalars("eval/perplexity") if evals else []:
    assert math.isclose(s.value, metrics[s.step]["eval_ppl"], rel_tol=1e-6)
print(f"{run}: {len(seen)} scalars over {len(tags)} tags, each (tag, step) once")
