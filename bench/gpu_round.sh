#!/usr/bin/env bash
# One GPU round (issues 5 and 6), in ONE command on the lent GPU machine (bench/GPU.md says how to start it):
#   1. install the pure-Python wheels carried in .whl/ (array-api-compat, array-api-strict) and the project;
#   2. run the test suite on CuPy: every `xp`-fixture test's cupy case, tests/test_cupy_fused.py,
#      tests/test_cupy_persistent.py, and whatever else names cupy;
#   3. time the persistent kernels' plan variants against cupy-fused and torch-cuda (bench/persistent_variants.py);
#   4. run the benchmark's reference configs for rnn_xp-cupy (every implementation usable on CuPy:
#      reference, cupy-fused, cupy-persistent) and torch-cuda.
# $OUT gets 8 files at most (the device tool brings back no more): env.txt, pytest-cupy.log, pytest-cupy.xml,
# persistent-variants.txt, bench-gpu-reference.json, bench-gpu-reference.md, bench.log, summary.txt.
# Everything lands in $OUT (what comes back from the machine) and in bench/results/ (for a run elsewhere).
# Each stage has its own time limit so that a slow one still leaves the others' files. The exit status
# is 0 only for a complete round (see the summary at the end, also in $OUT/summary.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/bench/results/gpu-round}
mkdir -p "$OUT" bench/results
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}
STAMP=$(date -u +%Y-%m-%d)
TEST_LIMIT_S=${TEST_LIMIT_S:-240}
VARIANTS_LIMIT_S=${VARIANTS_LIMIT_S:-75}
BENCH_LIMIT_S=${BENCH_LIMIT_S:-240}

echo "== 1. install"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 2; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "no .whl/ carried: array-api-compat and array-api-strict must already be installed"
fi
# the machine reaches no index: no build isolation, no dependencies (numpy, cupy, torch are there)
# ($OUT brings back at most 8 files: the install log stays on the machine, its tail goes to the output)
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . >/tmp/rnn_xp-install.log 2>&1; then
  tail -5 /tmp/rnn_xp-install.log
  echo "pip install -e . failed; using the source tree on PYTHONPATH"
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
  nvcc --version 2>/dev/null | tail -1 || echo "no nvcc"
  "$PY" - <<'PY'
import platform
from importlib import metadata
print("python", platform.python_version())
for d in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "torch", "array-api-compat", "array-api-strict", "pytest",
          "hypothesis", "rnn_xp"):
    try:
        print(d, metadata.version(d))
    except metadata.PackageNotFoundError:
        pass
import rnn_xp
b = rnn_xp.select_backend()
print("rnn_xp backend:", b.name, "-", b.reason)
print("implementations on cupy:", rnn_xp.implementations(b.xp) if b.name == "cupy" else "n/a")
PY
} 2>&1 | tee "$OUT/env.txt"

echo "== 2. tests on cupy (limit ${TEST_LIMIT_S}s)"
timeout "$TEST_LIMIT_S" "$PY" -m pytest -p no:cacheprovider -ra -q -k cupy --junitxml="$OUT/pytest-cupy.xml" tests \
  2>&1 | tee "$OUT/pytest-cupy.log"
test_rc=${PIPESTATUS[0]}
cp "$OUT/pytest-cupy.log" "bench/results/gpu-pytest-cupy-$STAMP.log"

echo "== 3. persistent kernels: plan variants vs cupy-fused and torch-cuda (limit ${VARIANTS_LIMIT_S}s)"
timeout "$VARIANTS_LIMIT_S" "$PY" -m bench.persistent_variants --out "$OUT/persistent-variants.txt" 2>&1 | tail -40
variants_rc=${PIPESTATUS[0]}
[ -f "$OUT/persistent-variants.txt" ] && cp "$OUT/persistent-variants.txt" "bench/results/gpu-persistent-variants-$STAMP.txt"

echo "== 4. benchmark: reference configs, rnn_xp-cupy and torch-cuda (limit ${BENCH_LIMIT_S}s)"
timeout "$BENCH_LIMIT_S" "$PY" -m bench --configs reference --backends rnn_xp-cupy,torch-cuda --no-plots \
  --no-progress --out "$OUT/bench-gpu-reference.json" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
if [ -f "$OUT/bench-gpu-reference.json" ]; then
  cp "$OUT/bench-gpu-reference.json" "bench/results/gpu-reference-$STAMP.json"
fi

echo "== summary"
# exit 0 only for a complete round: no failure, no cupy test skipped for want of a device, and verified
# benchmark records for both GPU backends (a machine whose GPU went missing passes nothing by skipping)
"$PY" - "$OUT" "$test_rc" "$bench_rc" "$variants_rc" <<'PY' | tee "$OUT/summary.txt"
import collections, json, os, sys
import xml.etree.ElementTree as ET

out, test_rc, bench_rc, variants_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
problems = []
if variants_rc:
    problems.append(f"persistent variants: exit {variants_rc} (a variant failed its check, or the stage timed out)")
try:
    cases = ET.parse(os.path.join(out, "pytest-cupy.xml")).getroot().iter("testcase")
    count, no_device = collections.Counter(), []
    for case in cases:
        kids = {k.tag: k for k in case}
        state = next((t for t in ("failure", "error", "skipped") if t in kids), "passed")
        count[state] += 1
        msg = kids.get("skipped").get("message", "") if state == "skipped" else ""
        if "device" in msg.lower() or "cupy is not importable" in msg.lower():
            no_device.append(f"{case.get('classname')}::{case.get('name')}: {msg}")
    print("tests selected by -k cupy:", dict(count))
    if count["failure"] or count["error"] or test_rc:
        problems.append(f"tests failed (pytest exit {test_rc})")
    if no_device:
        problems.append(f"{len(no_device)} cupy tests skipped for want of a GPU, e.g. {no_device[0]}")
except (OSError, ET.ParseError) as e:
    problems.append(f"no test report ({e})")
try:
    with open(os.path.join(out, "bench-gpu-reference.json")) as f:
        records = json.load(f)["records"]
    for backend in ("rnn_xp-cupy", "torch-cuda"):
        rows = [r for r in records if r["backend"] == backend]
        bad = [r["config"] for r in rows if not r.get("verified")]
        print(f"bench {backend}: {len(rows)} records, configs {sorted({r['config'] for r in rows})}"
              + (f", NOT verified: {bad}" if bad else ""))
        if not rows or bad:
            problems.append(f"bench {backend}: {'no records' if not rows else f'unverified {bad}'}")
    # issue 6's goals: rnn_xp-cupy (its best fp32 implementation) over torch-cuda, same run, TF32 off
    goals = {"keras-text": 0.67, "gru-latency": 0.67, "lstm-med": 1.0, "lstm-large": 1.0}
    for cfg, target in goals.items():
        mine = {r["impl"]: r["median_ms"] for r in records if r["config"] == cfg and r["backend"] == "rnn_xp-cupy"
                and not r.get("tf32") and r.get("verified") and r.get("median_ms")}
        torch_ms = [r["median_ms"] for r in records if r["config"] == cfg and r["backend"] == "torch-cuda"
                    and not r.get("tf32") and r.get("verified") and r.get("median_ms")]
        if mine and torch_ms:
            best = min(mine, key=mine.get)
            ratio = mine[best] / torch_ms[0]
            print(f"goal {cfg}: {best} {mine[best]:.3f} ms / torch {torch_ms[0]:.3f} ms = {ratio:.3f} "
                  f"(target <= {target}: {'holds' if ratio <= target else 'MISSED'}); all: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(mine.items())))
except (OSError, ValueError, KeyError) as e:
    problems.append(f"no benchmark results ({e}; bench exit {bench_rc})")
print("ROUND COMPLETE" if not problems else "ROUND INCOMPLETE:\n  " + "\n  ".join(problems))
sys.exit(1 if problems else 0)
PY
