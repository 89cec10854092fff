#!/usr/bin/env bash
# The GPU round (issue 16): ONE call of the device tool on a lent GPU machine; bench/GPU.md says how to start it.
#
#   0. install the pure-Python wheels carried in .whl/ (array-api-compat, array-api-strict); rnn_xp runs from
#      the source tree (PYTHONPATH), nothing is built;
#   1. env: GPU, driver, versions, what impl="auto" picks for each reference config and why;
#   2. pytest -k cupy: every cupy test (tests/test_cupy_*.py, the cupy case of every xp-fixture and
#      implementation test, the nvcc checks with CuPy's headers), in parallel where pytest-xdist is there;
#   3. the float32 accuracy check: a 500-step LSTM against float64, each CuPy implementation beside cuDNN;
#   4. the persistent kernels' plan variants against cupy-fused and torch-cuda, one process, CUDA events;
#   5. the benchmark of record: the four reference configs for rnn_xp-cupy (every implementation usable on
#      CuPy, and impl="auto" with TF32) and torch-cuda (cuDNN, TF32 off and on), a JSON written per config;
#   6. profile: Nsight Compute (ncu) on one call of each latency-bound config (the persistent kernels'
#      launches) and on two steps of cupy-fused's lstm-large (its cuBLAS product and gate kernel).
#
# Time: the whole script keeps to ROUND_BUDGET_S (default 300 s); each stage has its own limit and is cut
# to what is left of the budget, so a slow or hung stage still leaves the later ones some time and every
# file written so far. A trap writes summary.txt on any exit (also on SIGTERM from the tool's time limit).
# Files in $OUT (the device tool brings back at most 8): round.log, pytest-cupy.log, accuracy.txt,
# persistent-variants.txt, bench-gpu-reference.json, bench-gpu-reference.md, profile.txt, summary.txt
# (pytest's XML report, which the summary reads, stays in a temporary folder).
# Exit status 0 only for a complete round (summary.txt says what is missing otherwise).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/bench/results/gpu-round}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 CUPY_TF32=0
PY=${PYTHON:-python3}
BUDGET_S=${ROUND_BUDGET_S:-300}
RESERVE_S=15  # kept back for the summary
TESTS_LIMIT_S=${TESTS_LIMIT_S:-130}
ACCURACY_LIMIT_S=${ACCURACY_LIMIT_S:-40}
VARIANTS_LIMIT_S=${VARIANTS_LIMIT_S:-60}
BENCH_LIMIT_S=${BENCH_LIMIT_S:-200}
PROFILE_LIMIT_S=${PROFILE_LIMIT_S:-90}
BENCH_CONFIGS=${BENCH_CONFIGS:-keras-text,gru-latency,lstm-med,lstm-large}
PYTEST_WORKERS=${PYTEST_WORKERS:-4}
PYTEST_K=${PYTEST_K:-cupy}  # a narrower selection for a confirmation call, e.g. "cupy and persistent"
STAGES=${STAGES:-tests accuracy variants bench profile}  # a subset for a confirmation call
START=$(date +%s)
STATUS=$(mktemp)  # one line per stage: name, exit status, seconds (read by the summary)
CURRENT=$(mktemp)  # the pid of the running stage's `timeout`, for the signal handler
STOP=$STATUS.stop  # exists once a signal came: no further stage starts
XML_DIR=$(mktemp -d)  # pytest's XML report (read by the summary; not one of the 8 files brought back)
export RNN_XP_ROUND_XML=$XML_DIR/pytest-cupy.xml

finish() {
  trap - EXIT INT TERM
  echo "== summary ($(( $(date +%s) - START )) s since the start)"
  STAGES=$STAGES PYTEST_K=$PYTEST_K BENCH_CONFIGS=$BENCH_CONFIGS timeout -k 5 "$RESERVE_S" "$PY" - "$OUT" "$STATUS" <<'PY' 2>&1 \
    | tee "$OUT/summary.txt"
import collections, json, os, sys
import xml.etree.ElementTree as ET

out, status_path = sys.argv[1], sys.argv[2]
asked = os.environ["STAGES"].split()
problems = []
stages = {}
with open(status_path) as f:
    for line in f:
        name, rc, secs = line.split()
        stages[name] = (int(rc), int(secs))
for name in ("tests", "accuracy", "variants", "bench", "profile"):
    rc, secs = stages.get(name, (None, 0))
    if rc == -3:
        print(f"stage {name}: not asked for")
        continue
    state = "not run" if rc is None else "skipped (budget spent)" if rc == -1 else "skipped (interrupted)" \
        if rc == -2 else "TIMED OUT" if rc in (124, 137) else f"exit {rc}"
    print(f"stage {name}: {state}, {secs} s")
    if rc != 0:
        problems.append(f"stage {name}: {state}")
try:
    if "tests" not in asked:
        raise LookupError
    count, no_device, failed = collections.Counter(), [], []
    for case in ET.parse(os.environ["RNN_XP_ROUND_XML"]).getroot().iter("testcase"):
        kids = {k.tag: k for k in case}
        state = next((t for t in ("failure", "error", "skipped") if t in kids), "passed")
        count[state] += 1
        msg = kids[state].get("message", "") if state != "passed" else ""
        if state == "skipped" and ("device" in msg.lower() or "cupy is not importable" in msg.lower()):
            no_device.append(f"{case.get('classname')}::{case.get('name')}: {msg}")
        if state in ("failure", "error"):
            failed.append(f"{case.get('classname')}::{case.get('name')}: {msg[:160]}")
    print(f"tests selected by -k {os.environ['PYTEST_K']!r}:", dict(count))
    for line in failed[:25]:
        print("  FAILED", line)
    if failed:
        problems.append(f"{len(failed)} cupy tests failed")
    if no_device:
        problems.append(f"{len(no_device)} cupy tests skipped for want of a GPU, e.g. {no_device[0]}")
except LookupError:
    pass
except (OSError, ET.ParseError) as e:
    problems.append(f"no test report ({type(e).__name__}; see pytest-cupy.log)")
try:
    with open(os.path.join(out, "accuracy.txt")) as f:
        text = f.read()
    print(text.strip().splitlines()[-1])
except OSError:
    pass
try:
    if "bench" not in asked:
        raise LookupError
    with open(os.path.join(out, "bench-gpu-reference.json")) as f:
        result = json.load(f)
    records = result["records"]
    if "incomplete" in result:
        problems.append(f"benchmark incomplete: {result['incomplete']}")
    for backend in ("rnn_xp-cupy", "torch-cuda"):
        rows = [r for r in records if r["backend"] == backend]
        # an implementation the seam declines for a config (cupy-persistent on lstm-large) is a reason, not a failure
        declined = [r for r in rows if "cannot run this call" in (r.get("error") or "")]
        bad = [f"{r['config']} {r.get('impl')}" for r in rows if not r.get("verified") and r not in declined]
        print(f"bench {backend}: {len(rows)} records, configs {sorted({r['config'] for r in rows})}"
              + (f", NOT verified: {bad}" if bad else "")
              + "".join(f"\n  declined: {r['config']} {r.get('impl')}: {r['error'][:160]}" for r in declined))
        if not rows or bad:
            problems.append(f"bench {backend}: {'no records' if not rows else f'unverified {bad}'}")
    # issue 16's goals: the best fp32 (TF32 off) rnn_xp-cupy implementation over torch-cuda, same run
    goals = {"keras-text": 0.67, "gru-latency": 0.67, "lstm-med": 1.0, "lstm-large": 1.0}
    for cfg, target in goals.items():
        if cfg not in os.environ["BENCH_CONFIGS"].split(","):
            print(f"goal {cfg}: not benchmarked (BENCH_CONFIGS)")
            continue
        mine = {r["impl"]: r["median_ms"] for r in records if r["config"] == cfg and r["backend"] == "rnn_xp-cupy"
                and not r.get("tf32") and r.get("verified") and r.get("median_ms")}
        torch_ms = [r["median_ms"] for r in records if r["config"] == cfg and r["backend"] == "torch-cuda"
                    and not r.get("tf32") and r.get("verified") and r.get("median_ms")]
        if mine and torch_ms:
            best = min(mine, key=mine.get)
            ratio = mine[best] / torch_ms[0]
            print(f"goal {cfg}: {best} {mine[best]:.3f} ms / torch-cuda {torch_ms[0]:.3f} ms = {ratio:.3f} "
                  f"(target <= {target}: {'holds' if ratio <= target else 'MISSED'}); all: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(mine.items())))
        else:
            print(f"goal {cfg}: no verified fp32 pair measured")
except LookupError:
    pass
except (OSError, ValueError, KeyError) as e:
    problems.append(f"no benchmark results ({type(e).__name__}: {e})")
print(f"ROUND COMPLETE (stages: {' '.join(asked)})" if not problems else "ROUND INCOMPLETE:\n  " + "\n  ".join(problems))
sys.exit(1 if problems else 0)
PY
  local rc=${PIPESTATUS[0]}
  n=$(find "$OUT" -type f | wc -l)
  [ "$n" -le 8 ] || echo "WARNING: $n files in $OUT; the device tool brings back 8"
  ls -l "$OUT"
  rm -rf "$STATUS" "$CURRENT" "$STOP" "$XML_DIR"
  exit "$rc"
}

on_signal() {
  echo "== interrupted by a signal: stopping the running stage, then the summary"
  touch "$STOP"
  local pid
  pid=$(cat "$CURRENT" 2>/dev/null)
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null  # timeout passes it on to the stage's command
  sleep 2
  exit 130
}
trap finish EXIT
trap on_signal INT TERM

left() { echo $(( BUDGET_S - RESERVE_S - ($(date +%s) - START) )); }

# stage NAME LIMIT_S COMMAND...: run COMMAND under `timeout`, its limit cut to what is left of the budget
# (output to $STAGE_LOG when set, else to the round's log)
stage() {
  local name=$1 limit=$2 t0 rc
  shift 2
  local rest
  rest=$(left)
  [ "$rest" -lt "$limit" ] && limit=$rest
  if [[ " $STAGES " != *" $name "* ]]; then
    echo "== $name: not asked for (STAGES=$STAGES)"
    echo "$name -3 0" >>"$STATUS"
    return
  fi
  if [ -e "$STOP" ]; then
    echo "== $name: skipped (interrupted)"
    echo "$name -2 0" >>"$STATUS"
    return
  fi
  if [ "$limit" -lt 10 ]; then
    echo "== $name: skipped, ${rest} s of the budget left"
    echo "$name -1 0" >>"$STATUS"
    return
  fi
  echo "== $name (limit ${limit} s, $(( $(date +%s) - START )) s since the start)"
  t0=$(date +%s)
  if [ -n "${STAGE_LOG:-}" ]; then
    timeout -k 10 "$limit" "$@" >"$STAGE_LOG" 2>&1 &
  else
    timeout -k 10 "$limit" "$@" &
  fi
  echo $! >"$CURRENT"
  wait $!
  rc=$?
  : >"$CURRENT"
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  echo "$name $rc $(( $(date +%s) - t0 ))" >>"$STATUS"
}

stages() {
echo "== 0. install"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "installing the carried wheels failed"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "no .whl/ carried: array-api-compat and array-api-strict must already be installed"
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

echo "== 1. env"
date -u +%Y-%m-%dT%H:%M:%SZ
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader \
  || echo "nvidia-smi failed"
nvcc --version 2>/dev/null | tail -1 || echo "no nvcc"
timeout 60 "$PY" - <<'PY'
import platform
from importlib import metadata
print("python", platform.python_version())
for d in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "torch", "array-api-compat", "array-api-strict", "pytest",
          "pytest-xdist", "hypothesis", "onnxruntime"):
    try:
        print(d, metadata.version(d))
    except metadata.PackageNotFoundError:
        print(d, "not installed")
import cupy
import numpy as np
import rnn_xp
from bench.configs import REFERENCE
print("implementations on cupy:", rnn_xp.implementations(cupy))
for c in REFERENCE:
    p = rnn_xp.init(c.cell, c.input_size, c.hidden_size, seed=0, xp=cupy)
    x = cupy.zeros((c.batch, 2, c.input_size), dtype=cupy.float32)
    print(f"{c.name}: " + str(rnn_xp.explain(x, p)).replace("\n", "; "))
    try:
        rnn_xp.explain(x, p, impl="cupy-persistent")
        print("  cupy-persistent (opt-in) can run it")
    except ValueError as e:
        print(f"  {e}")
PY

XDIST=()
if [ "$PYTEST_WORKERS" -gt 1 ] && "$PY" -c "import xdist" 2>/dev/null; then
  XDIST=(-n "$PYTEST_WORKERS")
fi
echo "== 2. tests: pytest -k '$PYTEST_K' ${XDIST[*]} (full log in pytest-cupy.log)"
STAGE_LOG=$OUT/pytest-cupy.log stage tests "$TESTS_LIMIT_S" "$PY" -m pytest -p no:cacheprovider -k "$PYTEST_K" \
  "${XDIST[@]}" -v -rfEs --durations=15 --junitxml="$RNN_XP_ROUND_XML" tests
[ -f "$OUT/pytest-cupy.log" ] && tail -40 "$OUT/pytest-cupy.log"

echo "== 3. accuracy: 500-step float32 LSTM against float64, beside cuDNN"
stage accuracy "$ACCURACY_LIMIT_S" "$PY" -m bench.accuracy --out "$OUT/accuracy.txt"

echo "== 4. persistent kernels: plan variants vs cupy-fused and torch-cuda"
stage variants "$VARIANTS_LIMIT_S" "$PY" -m bench.persistent_variants --out "$OUT/persistent-variants.txt"

echo "== 5. benchmark: reference configs, rnn_xp-cupy and torch-cuda (latency-bound configs first)"
stage bench "$BENCH_LIMIT_S" "$PY" -m bench --configs "$BENCH_CONFIGS" \
  --backends rnn_xp-cupy,torch-cuda --rounds 3 --budget 0.3 --no-plots --no-progress \
  --out "$OUT/bench-gpu-reference.json"

echo "== 6. profile: ncu on the persistent kernels (one call per latency-bound config) and two fused steps"
STAGE_LOG=$OUT/profile.txt stage profile "$PROFILE_LIMIT_S" bash -c '
  NCU=(ncu --clock-control none --section SpeedOfLight --section LaunchStats --section Occupancy
       --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis)
  "${NCU[@]}" --section SourceCounters --kernel-name regex:rnnxp_persist "$0" -m bench.gpu_profile \
    --configs keras-text,gru-latency,lstm-med || echo "ncu (persistent) exit $?"
  "${NCU[@]}" --launch-skip 6 --launch-count 4 "$0" -m bench.gpu_profile --impl cupy-fused \
    --configs lstm-large --steps 6 || echo "ncu (fused) exit $?"' "$PY"
[ -f "$OUT/profile.txt" ] && grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Stall|^== " "$OUT/profile.txt" | head -80
}

# in the background, so that a signal reaches the handler at once (bash runs a trap only between commands)
stages 2>&1 </dev/null | tee -a "$OUT/round.log" &
wait $!
wait  # the rest of the pipeline
