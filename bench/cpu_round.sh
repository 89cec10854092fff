#!/usr/bin/env bash
# The CPU round: every measurement the compiled CPU engine's speed goals name, on the machine at hand, in one
# command, each result under bench/results/ with the CPU in its name. Run it with nothing else running:
#
#   bash bench/cpu_round.sh                 # about 45-60 min on 2 cores
#   STAGES="tune bench" bash bench/cpu_round.sh
#   TAG=v2 bash bench/cpu_round.sh          # a second round the same day: its files end in -v2
#
# Stages (in this order; STAGES picks some):
#   facts   cpu-<name>.txt: lscpu, the CPU flags, and the engine's view of the CPU (rnn-xp tune --show)
#   tune    tune-<name>.md: rnn-xp tune with the host's code and with AVX2 code (NUMBA_CPU_NAME=haswell); each
#           keeps its choice in the tuning file (RNN_XP_TUNING_FILE, default ~/.cache/rnn_xp/tuning.json), so
#           the stages after it run with the tuned block sizes, as a user's would after tuning
#   bench   <name>.json/.md/.png: python -m bench, every backend installed (the goals table)
#   avx2    <name>-haswell-code.*: NUMBA_CPU_NAME=haswell python -m bench --backends rnn_xp-numpy
#   stream  stream-<name>.json/.md: python -m bench.stream --rounds 5 --calls 500
#   first   first-call-<name>.json/.md: python -m bench.first_call (fresh processes, empty caches)
# where <name> is the CPU model, the core count and the date, as python -m bench names its files (and -TAG).
# Each stage's output also goes to bench/results/cpu-round-<name>.log. A failing stage does not stop the later
# ones; the exit status is the number of stages that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
STAGES=${STAGES:-facts tune bench avx2 stream first}
RESULTS=bench/results
NAME=$("$PY" -c "import os; from bench.cli import _slug, _cpu_model; print(_slug(f'{_cpu_model()}-{os.cpu_count()}c'))")-$(date -u +%F)${TAG:+-$TAG}
LOG=$RESULTS/cpu-round-$NAME.log
mkdir -p "$RESULTS"
failed=0

stage() {  # stage NAME COMMAND...: run it unless STAGES leaves it out, its output into the log
  local name=$1
  shift
  case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name: $* ($(date -u +%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))" | tee -a "$LOG"
  local start=$SECONDS
  if ! "$@" 2>&1 | tee -a "$LOG"; then
    failed=$((failed + 1))
    echo "== $name FAILED after $((SECONDS - start)) s" | tee -a "$LOG"
  else
    echo "== $name done in $((SECONDS - start)) s" | tee -a "$LOG"
  fi
}

facts() {
  {
    echo "# $(date -u +%FT%TZ)"
    lscpu 2>/dev/null || cat /proc/cpuinfo
    echo
    "$PY" -m rnn_xp tune --show
  } > "$RESULTS/cpu-$NAME.txt"
  cat "$RESULTS/cpu-$NAME.txt"
}

tune() {
  local out=$RESULTS/tune-$NAME.md rc=0
  {
    echo "# rnn-xp tune, $(date -u +%FT%H:%MZ), $("$PY" -c "from bench.cli import _cpu_model; print(_cpu_model())")"
    echo
    echo "## the host's code (\`rnn-xp tune\`)"
    echo
    echo '```'
    "$PY" -m rnn_xp tune | grep -v ' round ' || rc=1
    echo '```'
    echo
    echo "## AVX2 code (\`NUMBA_CPU_NAME=haswell rnn-xp tune\`)"
    echo
    echo '```'
    NUMBA_CPU_NAME=haswell "$PY" -m rnn_xp tune | grep -v ' round ' || rc=1
    echo '```'
  } > "$out"
  cat "$out"
  return "$rc"
}

stream() {
  "$PY" -m bench.stream --rounds 5 --calls 500 --out "$RESULTS/stream-$NAME.json" > "$RESULTS/stream-$NAME.md" &&
    cat "$RESULTS/stream-$NAME.md"
}

first() {
  "$PY" -m bench.first_call --out "$RESULTS/first-call-$NAME.json" > "$RESULTS/first-call-$NAME.md" &&
    cat "$RESULTS/first-call-$NAME.md"
}

stage facts facts
stage tune tune
stage bench "$PY" -m bench --no-progress --out "$RESULTS/$NAME.json"
stage avx2 env NUMBA_CPU_NAME=haswell "$PY" -m bench --backends rnn_xp-numpy --no-progress \
  --out "$RESULTS/$NAME-haswell-code.json"
stage stream stream
stage first first
echo "== cpu round: $failed stage(s) failed; files: $RESULTS/*$NAME*" | tee -a "$LOG"
exit "$failed"
