"""The floor leg of .ci/run: .ci/floors.txt pins exactly the lower bounds that pyproject.toml states.

pyproject.toml says which versions rnn_xp admits; .ci/floors.txt is what the floor leg installs to
test the oldest of them. The two are written by hand, so these tests keep them from drifting apart,
and keep the README's list of tested versions in step with both.
"""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli there
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ROOT / ".ci" / "floors.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# pinned in floors.txt without being rnn_xp's dependency, and why
NOT_OURS = {"llvmlite": "numba's own dependency: the release that numba's floor takes"}


def _floors():
    """{name: Version} of floors.txt; every line a name==version pin, comments aside."""
    pins = {}
    for line in FLOORS.read_text().splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)", line)
        assert m, f".ci/floors.txt: {line!r} is not an exact pin (expected name==version)"
        pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    return pins


def _lower_bounds():
    """{name: {Version, ...}}: every >= bound in pyproject.toml's dependencies and extras."""
    bounds = {}
    lists = [PYPROJECT["dependencies"], *PYPROJECT["optional-dependencies"].values()]
    for text in (r for reqs in lists for r in reqs):
        req = Requirement(text)
        for spec in req.specifier:
            if spec.operator == ">=":
                bounds.setdefault(canonicalize_name(req.name), set()).add(Version(spec.version))
    return bounds


def test_every_pin_is_the_lower_bound_pyproject_states():
    bounds = _lower_bounds()
    for name, version in _floors().items():
        if name in NOT_OURS:
            continue
        assert name in bounds, (
            f".ci/floors.txt pins {name}=={version}, but pyproject.toml gives {name} no lower bound; "
            f"add one there, or list {name} in NOT_OURS with the reason"
        )
        assert bounds[name] == {version}, (
            f".ci/floors.txt pins {name}=={version}; pyproject.toml's lower bound is "
            f"{', '.join(map(str, sorted(bounds[name])))}: make them the same"
        )


def test_the_dependencies_and_numba_are_pinned():
    pinned = set(_floors())
    needed = PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["numba"]
    missing = sorted({canonicalize_name(Requirement(r).name) for r in needed} - pinned)
    assert not missing, f".ci/floors.txt pins no version of {missing}; the floor leg must test their floors"


def test_each_package_has_one_floor():
    """Two extras naming one package with two bounds would leave one of them untested."""
    several = {n: sorted(map(str, v)) for n, v in _lower_bounds().items() if len(v) > 1}
    assert not several, f"pyproject.toml gives these packages several lower bounds: {several}"


def test_requires_python_is_the_form_ci_reads():
    # .ci/run reads the floor leg's Python out of this line with sed
    assert re.fullmatch(r">=3\.\d+", PYPROJECT["requires-python"]), PYPROJECT["requires-python"]
    assert re.search(r'^requires-python = ">=3\.\d+"$', (ROOT / "pyproject.toml").read_text(), re.M)


def test_the_readme_names_the_tested_floors():
    readme = (ROOT / "README.md").read_text()
    para = next((p for p in readme.split("\n\n") if ".ci/floors.txt" in p), None)
    assert para, "README.md has no paragraph on the tested versions (naming .ci/floors.txt)"
    para = " ".join(para.split())
    pins = _floors()
    python = PYPROJECT["requires-python"].removeprefix(">=")
    for label, version in [
        ("Python", python),
        ("NumPy", pins["numpy"]),
        ("array-api-compat", pins["array-api-compat"]),
        ("numba", pins["numba"]),
    ]:
        assert f"{label} {version}" in para, f"README.md's tested versions do not say {label} {version}: {para}"
