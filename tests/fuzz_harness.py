"""Fuzz the loaders whose parsing happens in C, C++ or Rust, each mutant in a child process.

HDF5 (h5py, behind from_keras), protobuf and ONNX shape inference (from_onnx), torch's zip reader (from_torch)
and safetensors can crash the interpreter on hostile bytes. A crash in a child shows up here as a failure
with its input saved, not as a dead test run. The contract checked for every mutant: the loader returns an
object or raises ValueError; a signal, a hang, an abnormal exit or any other exception is a finding.

    python tests/fuzz_harness.py --seconds 600 --seed 1 --out fuzz-findings     # a longer run
    python tests/fuzz_harness.py --replay fuzz-findings/crash-onnx-....onnx    # one saved input again

Mutants are derived deterministically from (seed, target, index): the same command finds the same inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

BATCH = 150  # mutants per child: a child's start (importing torch, onnx, h5py) costs about a second
CHILD_TIMEOUT = 120  # seconds for one batch; one mutant that hangs kills its batch and is reported
MEMORY_LIMIT = 4 << 30  # a child asking for more gets MemoryError (a finding), not the machine's OOM killer
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 40, (1 << 63) - 1,
               (1 << 64) - 1]


# --- the seed corpus ---------------------------------------------------------------------------------------
def _keras_file(path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    L = keras.layers
    model = keras.Sequential([keras.Input((5, 3)), L.Masking(), L.Bidirectional(L.GRU(4, return_sequences=True)),
                              L.LSTM(3), L.Dense(2, activation="softmax")])
    model.save(path)


def _onnx_file(path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, s).astype(np.float32), n)
             for n, s in (("W", (2, 16, 3)), ("R", (2, 16, 4)), ("B", (2, 32)), ("P", (2, 12)))]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    nodes = [helper.make_node("Transpose", ["x"], ["X"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["X", "W", "R", "B", "L", "", "", "P"], ["Y", "Yh", "Yc"], hidden_size=4,
                              direction="bidirectional", activations=["Sigmoid", "Tanh", "Tanh"] * 2, clip=5.0),
             helper.make_node("Squeeze", ["Yh", "axes"], ["h"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 3]),
                                           helper.make_tensor_value_info("L", TensorProto.INT32, ["B"])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "h", "Yc")],
                              initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)


def _torch_file(path):
    import torch

    torch.save(torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2).state_dict(), path)


def _safetensors_file(path):
    import torch
    from safetensors.torch import save_file

    save_file(torch.nn.GRU(3, 4, bidirectional=True).state_dict(), str(path))


# target -> (suffix, make the seed file, the loader's name in the child)
TARGETS = {
    "h5": (".keras", _keras_file, "from_keras"),  # mutants of model.weights.h5 inside a sound zip: HDF5 itself
    "keras": (".keras", _keras_file, "from_keras"),  # mutants of the whole archive
    "onnx": (".onnx", _onnx_file, "from_onnx"),
    "pt": (".pt", _torch_file, "from_torch"),
    "safetensors": (".safetensors", _safetensors_file, "from_torch"),
}


def make_corpus(directory):
    """target -> the bytes of a valid seed file, written under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for target, (suffix, make, _) in TARGETS.items():
        path = directory / f"seed-{target}{suffix}"
        if not path.exists():
            make(path)
        out[target] = path.read_bytes()
    return out


# --- mutations ---------------------------------------------------------------------------------------------
def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four mutations: bit flips, interesting bytes, truncation, splices, length-field edits."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "byte", "truncate", "splice", "duplicate", "int32", "int64", "delete"])
        i = rng.randrange(max(len(buf), 1))
        if not buf:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == "flip":
            buf[i] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            buf[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFF])
        elif kind == "truncate":
            del buf[i:]
        elif kind == "splice":
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif kind == "duplicate":
            j = rng.randrange(len(buf))
            buf[i:i] = buf[j:j + rng.randint(1, 64)]
        elif kind == "delete":
            del buf[i:i + rng.randint(1, 32)]
        else:  # a length or offset field: an interesting integer, little- or big-endian
            fmt = rng.choice("<>") + ("I" if kind == "int32" else "Q")
            v = rng.choice(INTERESTING + [len(buf), len(buf) + 1, rng.randrange(1 << 16)])
            v &= 0xFFFFFFFF if kind == "int32" else (1 << 64) - 1
            buf[i:i + struct.calcsize(fmt)] = struct.pack(fmt, v)
    return bytes(buf)


def mutant(target, seed_bytes, seed, index):
    """The index-th mutant of a target's seed file, the same for the same (seed, target, index)."""
    rng = random.Random(f"{seed}/{target}/{index}")
    if target != "h5":
        return mutate(seed_bytes, rng)
    with zipfile.ZipFile(io.BytesIO(seed_bytes)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["model.weights.h5"] = mutate(members["model.weights.h5"], rng)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:  # a sound zip around damaged HDF5: h5py sees every mutation
        for n, d in members.items():
            zf.writestr(n, d)
    return out.getvalue()


# --- the child -----------------------------------------------------------------------------------------------
def child(loader_name, paths):
    """Load each path; print one JSON line per input; a crash leaves its "start" line last."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import rnn_xp

    loader = getattr(rnn_xp, loader_name) if loader_name != "selftest" else _selftest_loader
    for i, path in enumerate(paths):
        print(json.dumps({"start": i}), flush=True)
        try:
            loader(path)
            outcome = "ok"
        except ValueError:
            outcome = "refused"
        except BaseException as e:  # noqa: BLE001 - anything else breaks the contract: reported with its traceback
            outcome = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"
        print(json.dumps({"done": i, "outcome": outcome}), flush=True)


def _selftest_loader(path):
    """A loader that crashes the way a C library does, for the harness's own test."""
    data = Path(path).read_bytes()
    if data.startswith(b"CRASH"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if data.startswith(b"HANG"):
        time.sleep(3600)
    if data.startswith(b"OOPS"):
        raise KeyError("not a ValueError")
    raise ValueError("refused")


# --- the parent ------------------------------------------------------------------------------------------------
def _save(out_dir, kind, target, data, detail):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = TARGETS[target][0] if target in TARGETS else ".bin"
    path = out_dir / f"{kind}-{target}-{hashlib.sha256(data).hexdigest()[:12]}{suffix}"
    path.write_bytes(data)
    path.with_suffix(path.suffix + ".txt").write_text(detail)
    return path


def run_batch(loader_name, target, mutants, work, out_dir, timeout=CHILD_TIMEOUT):
    """Run mutants in children (a new child after each crash); returns (findings, ran)."""
    findings, start = [], 0
    while start < len(mutants):
        paths = []
        for k, data in enumerate(mutants[start:]):
            p = Path(work) / f"m{k}{TARGETS.get(target, ('.bin',))[0]}"
            p.write_bytes(data)
            paths.append(str(p))
        env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", loader_name, *paths]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work, env=env)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = "timeout", (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else ""
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        for rec in lines:
            if "done" in rec and rec["outcome"] not in ("ok", "refused"):
                data = mutants[start + rec["done"]]
                findings.append(("exception", _save(out_dir, "exception", target, data, rec["outcome"]),
                                 rec["outcome"].splitlines()[0]))
        last = next((rec for rec in reversed(lines)), None)
        if rc == 0 and last is not None and last.get("done") == len(paths) - 1:
            return findings, len(mutants)
        # the child died (a signal, an exit, a hang) during the input it last started
        failed = start + (last["start"] if last and "start" in last else (last["done"] + 1 if last else 0))
        if failed >= len(mutants):
            return findings, len(mutants)
        why = ("hang" if rc == "timeout" else f"signal {signal.Signals(-rc).name}" if isinstance(rc, int) and rc < 0
               else f"exit status {rc}")
        findings.append(("crash", _save(out_dir, "crash", target, mutants[failed], f"{why}\n{err[-4000:]}"), why))
        start = failed + 1
    return findings, len(mutants)


def fuzz(seconds, seed, out_dir, targets=None, corpus_dir=None, batch=BATCH, log=print):
    """Fuzz each target for its share of ``seconds``; returns (findings, mutants run per target)."""
    targets = list(targets or TARGETS)
    corpus = make_corpus(corpus_dir or Path(out_dir) / "corpus")
    findings, counts = [], {}
    with tempfile.TemporaryDirectory(prefix="rnn_xp-fuzz-") as work:
        for target in targets:
            deadline = time.monotonic() + seconds / len(targets)
            index = counts[target] = 0
            while index == 0 or time.monotonic() < deadline:
                mutants = [mutant(target, corpus[target], seed, index + k) for k in range(batch)]
                found, ran = run_batch(TARGETS[target][2], target, mutants, work, out_dir)
                findings += found
                index += ran
                counts[target] = index
            log(f"{target}: {index} mutants, {sum(f[1].name.split('-')[1] == target for f in findings)} findings")
    return findings, counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("RNN_XP_FUZZ_SECONDS", 60)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fuzz-findings", help="where crashing inputs are saved")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"a comma-separated subset of {list(TARGETS)}")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--replay", help="load one saved input in a child and print what happens")
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], args.child[1:])
    if args.replay:
        path = Path(args.replay)
        target = path.name.split("-")[1]
        with tempfile.TemporaryDirectory() as work:
            found, _ = run_batch(TARGETS[target][2], target, [path.read_bytes()], work, Path(work) / "again")
        print(found[0][2] if found else "no crash: the input loads or is refused with a ValueError")
        return 1 if found else 0
    findings, counts = fuzz(args.seconds, args.seed, args.out, args.targets.split(","))
    for kind, path, why in findings:
        print(f"{kind}: {why}: {path}")
    print(f"{sum(counts.values())} mutants, {len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
