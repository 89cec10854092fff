#!/bin/sh
# The image's default command (also runs outside it, from the repository root): say which backend
# rnn_xp picks here and why, then run the benchmark's quick mode. Arguments go to `python -m bench`.
set -eu
python - <<'PY'
import rnn_xp

b = rnn_xp.select_backend()
if b.name == "cupy":
    print(f"rnn_xp backend: cupy on GPU {b.device.id} ({b.reason})", flush=True)
else:
    print(f"rnn_xp backend: no GPU visible, falling back to NumPy ({b.reason})", flush=True)
PY
exec python -m bench --quick --no-plots --no-progress "$@"
