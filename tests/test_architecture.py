"""The package's structure: no import cycle (deferred imports included), and one decision point."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnn_xp
from rnn_xp import seam

PACKAGE = Path(rnn_xp.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_module(name: str) -> bool:
    p = PACKAGE.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """Every rnn_xp module ``path`` imports, at any depth of its code (deferred imports count)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "rnn_xp"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "rnn_xp":
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if _is_module(sub) else source)
    out.discard(me)
    return out


def test_no_import_cycle():
    graph = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    # the seam imports the implementations by name (importlib): those edges count too
    graph["rnn_xp.seam"] |= {
        "rnn_xp.loop" if i.module == "loop" else f"rnn_xp._fast.{i.module}" for i in seam.IMPLEMENTATIONS
    }
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_public_function_hides_a_module():
    for p in PACKAGE.glob("*.py"):
        name = p.stem
        if name.startswith("_"):
            continue
        obj = getattr(rnn_xp, name, None)
        assert obj is None or type(obj).__name__ == "module", f"rnn_xp.{name} is a {type(obj).__name__}: hides a module"


def test_import_rnn_xp_imports_no_fast_path_nor_heavy_namespace():
    heavy = ("cupy", "torch", "jax", "dask", "numba", "rnn_xp._fast.numpy_fused", "rnn_xp._fast.cupy_fused")
    code = f"import sys, rnn_xp; bad = [m for m in {heavy!r} if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_implementation_follows_the_protocol():
    for impl in seam.IMPLEMENTATIONS:
        mod = seam._module(impl)
        assert callable(mod.unsupported) and callable(mod.run_direction), impl.name
        spaces = getattr(mod, "NAMESPACES", None)
        assert spaces is None or all(isinstance(s, str) for s in spaces)


def _call(**kw):
    cfg = rnn_xp.init("lstm", 2, 3, xp=np).config
    base = dict(namespace="numpy", cfg=cfg, dtype="float32", steps=4, batch=2)
    return seam.Call(**{**base, **kw})


def test_auto_records_why_each_skipped_implementation_was_skipped():
    choice = seam.select_runner(_call(trace=True))
    assert choice.implementation == "reference"
    reasons = dict(choice.skipped)
    assert "numpy-fused" in reasons and "trac" in reasons["numpy-fused"]
    assert "skipped numpy-fused" in str(choice)


def test_an_explicit_impl_that_cannot_run_raises_with_the_reason():
    with pytest.raises(ValueError, match="impl='numpy-fused' cannot run this call: .*trac.*Fix: impl='auto'"):
        seam.select_runner(_call(trace=True), "numpy-fused")
    with pytest.raises(ValueError, match="runs on numpy, not on torch"):
        seam.select_runner(_call(namespace="torch"), "numpy-fused")
    with pytest.raises(ValueError, match="impl='magic' is unknown"):
        seam.select_runner(_call(), "magic")


def test_explain_matches_what_forward_runs(monkeypatch):
    p = rnn_xp.init("gru", 2, 3, seed=0, xp=np)
    x = np.ones((2, 4, 2), np.float32)
    choice = rnn_xp.explain(x, p)
    assert choice.implementation in rnn_xp.implementations(np)
    ran = []
    real = seam.select_runner

    def spy(call, impl="auto"):
        c = real(call, impl)
        ran.append(c.implementation)
        return c

    monkeypatch.setattr("rnn_xp.engine.select_runner", spy)
    rnn_xp.forward(x, p)
    assert ran == [choice.implementation]
