#!/bin/sh
# The image's default command (also runs outside it, from the repository root): say which backend
# rnn_xp picks here and why, then run the benchmark's quick mode. Arguments go to `python -m bench`.
# Results go to $RNN_XP_RESULTS (/results in the image), else to the benchmark's default (a temp folder).
set -eu
python - <<'PY'
import importlib.util
import os
import sys

import rnn_xp

b = rnn_xp.select_backend()
if b.name == "cupy":
    print(f"rnn_xp backend: cupy on GPU {b.device.id} ({b.reason})", flush=True)
else:
    print(f"rnn_xp backend: no GPU visible, falling back to NumPy ({b.reason})", flush=True)
if importlib.util.find_spec("torch") is None:
    print("benchmark peers: PyTorch and onnxruntime are not installed, so the 'vs best peer' column is '-' "
          "(build with --build-arg BENCH=1 to compare)", flush=True)
out = os.environ.get("RNN_XP_RESULTS")
if out:
    probe = os.path.join(out, ".rnn_xp-write-test")
    if not os.path.isdir(out):
        print(f"rnn-xp-quick: error: RNN_XP_RESULTS={out} is not a folder. Fix: point it at a folder, or mount "
              f"one there: docker run -v \"$PWD/results:{out}\" ...", file=sys.stderr)
        sys.exit(2)
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        print(f"rnn-xp-quick: error: cannot write the results to {out} ({e.strerror}). Fix: run as your own "
              f"user, docker run -u \"$(id -u):$(id -g)\" -v \"$PWD/results:{out}\" ...", file=sys.stderr)
        sys.exit(2)
    if not os.path.ismount(out):
        print(f"results go to {out} inside the container: mount a host folder there to keep them "
              f"(mkdir -p results; docker run -u \"$(id -u):$(id -g)\" -v \"$PWD/results:{out}\" ...)", flush=True)
PY
if [ -n "${RNN_XP_RESULTS:-}" ]; then
  exec python -m bench --quick --no-progress --out "$RNN_XP_RESULTS/" "$@"
fi
exec python -m bench --quick --no-progress "$@"
