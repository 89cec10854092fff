"""README.md's Python examples run as written, in order, in one namespace and one (temporary) folder.

Shell blocks (bash, sh) are not run here: .ci/run runs the quick-start commands, and the Docker
commands need a Docker engine. Without a usable GPU, ``import cupy`` is read as
``import numpy as cupy``: the same calls run on the CPU (the README says so to its readers). With a
GPU, the examples run on CuPy as written. Lines that are comments are never run.

Where a peer library is not installed (the floor leg of .ci/run has no torch, Keras, onnx, dask nor
matplotlib), an example that needs it is skipped with the reason, and so are the examples after it
that use what it made: the later blocks of its section, and any block that then meets an undefined name.

The section files that once repeated README text (bench/README_SECTION.md,
docker/README_SECTION.md) are gone: each text lives in one file, which the last test checks.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

os.environ.setdefault("KERAS_BACKEND", "torch")  # the Keras example trains with Keras 3 on any backend

# the frameworks' own deprecation notes are theirs to fix; rnn_xp's stay errors (pyproject's filterwarnings)
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*"),
    pytest.mark.filterwarnings("ignore::UserWarning:torch.*"),
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean"),
]

# heading of a block -> why it is expected to fail for now (strict: the test says when it passes again)
XFAIL: dict[str, str] = {}


def _blocks():
    """[(heading, index under it, language, code)] of the README's fenced blocks, in order."""
    out, heading, counts = [], "top", {}
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        m = re.match(r"^\s*```(\w*)\s*$", line)
        if m:
            j = i + 1
            while not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            counts[heading] = counts.get(heading, 0) + 1
            out.append((heading, counts[heading], m.group(1), "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return out


def _gpu_usable():
    try:
        import rnn_xp

        return rnn_xp.select_backend("auto").name == "cupy"
    except Exception:  # noqa: BLE001 - no GPU, for whatever reason
        return False


PYTHON = [(h, k, code) for h, k, lang, code in _blocks() if lang == "python"]


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    """One namespace for every example (later ones use what earlier ones made), run in one temp folder."""
    folder = tmp_path_factory.mktemp("readme")
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield {"__name__": "__readme__", "__skipped__": {}}
    finally:
        os.chdir(old)


def test_the_readme_has_python_examples_and_none_hides_as_another_language():
    assert len(PYTHON) >= 4, PYTHON
    for heading, _, lang, code in _blocks():
        if lang != "python":  # a block of Python marked otherwise (or not at all) would escape the test
            assert not re.search(r"^\s*(import \w|from \w+ import|\w+ = rnn_xp\.)", code, re.M), (heading, lang)


@pytest.mark.parametrize("heading, index, code", PYTHON, ids=[f"{h}#{k}" for h, k, _ in PYTHON])
def test_readme_example_runs(namespace, heading, index, code, request):
    if heading in XFAIL:
        request.applymarker(pytest.mark.xfail(reason=XFAIL[heading], strict=True))
    if not _gpu_usable():
        code = re.sub(r"^(\s*)import cupy\b", r"\1import numpy as cupy", code, flags=re.M)
    skipped = namespace["__skipped__"]  # heading -> why an example of that section was skipped
    if heading in skipped:
        pytest.skip(f"an earlier example of this section was skipped: {skipped[heading]}")
    missing = _missing_imports(code)
    if missing:
        skipped[heading] = f"{', '.join(missing)} not installed"
        pytest.skip(skipped[heading])
    try:
        exec(compile(code, f"README.md: {heading} (block {index})", "exec"), namespace)  # noqa: S102
    except NameError as e:
        if not skipped:
            raise
        skipped[heading] = f"uses {e.name!r}, made by an example skipped above ({'; '.join(skipped.values())})"
        pytest.skip(skipped[heading])
    except ImportError as e:
        # a peer that the example or rnn_xp imports on demand (onnx for from_onnx, ...); rnn_xp's own
        # ImportErrors for a missing peer say what to pip install
        peer = isinstance(e, ModuleNotFoundError) and not (e.name or "rnn_xp").startswith("rnn_xp")
        if not (peer or "pip install" in str(e)):
            raise
        skipped[heading] = str(e)
        pytest.skip(skipped[heading])


def _missing_imports(code):
    """The top-level modules that code imports and that are not installed."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


def test_readme_sections_have_one_source():
    assert not list(ROOT.glob("**/README_SECTION*.md")), "a section copy would drift from README.md"
    readme = README.read_text()
    paragraphs = {p.strip() for p in readme.split("\n\n") if len(p.strip()) > 150 and not p.startswith("|")}
    for other in (ROOT / "bench" / "README.md", ROOT / "docker" / "README.md"):
        shared = [p for p in other.read_text().split("\n\n") if p.strip() in paragraphs]
        assert not shared, f"{other.relative_to(ROOT)} repeats README.md paragraphs: {shared[:1]}"
