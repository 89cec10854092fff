"""rnn-xp tune: block sizes measured on this CPU, kept by CPU in a JSON file, used by later calls.

The tune compiles a kernel per candidate, so these tests measure two candidates on small shapes. What
they check: the choice is saved under this CPU and used (explain says so), a result never changes with
it, a tuning file that is broken in any way is ignored with the reason in explain (never an error in a
call), RNN_XP_BLOCKING still wins, and the command line's tune, --show, --forget and --no-save.
"""

import functools
import json
import os

import numpy as np
import pytest

import rnn_xp
from rnn_xp import cli
from rnn_xp._fast import _cpu, _tune

pytest.importorskip("numba")

SMALL = ((8, 16, 24, 3), (5, 16, 40, 2))  # (batch, inputs, hidden, steps): two kernels' worth of checks


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """A tuning file of this test's own; the block sizes read afresh before and after."""
    path = tmp_path / "cache" / "tuning.json"
    monkeypatch.setenv("RNN_XP_TUNING_FILE", str(path))
    monkeypatch.delenv("RNN_XP_BLOCKING", raising=False)
    monkeypatch.setattr(_tune, "SHAPES", SMALL)
    _cpu.blocking.cache_clear()
    yield path
    _cpu.blocking.cache_clear()


def other(analytical):
    """A candidate unlike the analytical one (another tile and k block)."""
    return _tune.Candidate(3 if analytical.mr != 3 else 2, 2, 64)


def test_tune_saves_its_choice_for_this_cpu_and_later_calls_use_it(tuning, monkeypatch):
    params = rnn_xp.init("lstm", 7, 45, seed=3)
    x = np.random.default_rng(0).standard_normal((29, 11, 7)).astype(np.float32)
    before, _ = rnn_xp.forward(x, params, impl="numba")
    ana = _cpu.analytical(4)
    analytical = _tune.Candidate(ana.mr, ana.v, ana.kc)
    pick = other(analytical)
    monkeypatch.setattr(_tune, "choose", lambda scores, analytical: pick)  # whatever this machine measures
    lines = []
    result = _tune.tune(rounds=2, calls=1, progress=lines.append, candidates=[tuple(pick)])
    assert result.analytical == analytical and result.chosen == pick
    assert {row[0] for row in result.rows} == {analytical, pick}
    assert all(len(best) == len(SMALL) and min(best) > 0 for _, _, best in result.rows)
    assert dict((c, s) for c, s, _ in result.rows)[analytical] == 1.0
    assert any("ready in" in line for line in lines) and any("round 2/2" in line for line in lines)
    assert any(line.startswith("confirming:") for line in lines) and result.confirmed[0] == pick
    table = result.table()
    assert f"{pick}" in table and "<- chosen" in table and table.count("GF/s") == 2 * len(SMALL), table
    assert "B8 in16 H24 T3" in table
    assert result.path == tuning
    saved = json.loads(tuning.read_text())["cpus"][_cpu.cpu_key()]
    assert (saved["mr"], saved["v"], saved["kc"]) == tuple(pick)
    assert saved["analytical"] == list(analytical) and saved["rnn_xp"] == rnn_xp.__version__
    b = _cpu.blocking(4)  # tune cleared the cached block sizes: this process uses the choice now
    assert (b.mr, b.v, b.kc) == tuple(pick) and b.source.startswith("measured by rnn-xp tune")
    fresh = rnn_xp.init("lstm", 7, 45, seed=3)  # a new config: a spec of the tuned block sizes
    after, _ = rnn_xp.forward(x, fresh, impl="numba")
    assert after.tobytes() == before.tobytes()
    assert "block sizes measured by rnn-xp tune" in str(rnn_xp.explain(x, fresh))


def test_no_save_keeps_nothing(tuning):
    result = _tune.tune(rounds=1, calls=1, save=False, candidates=[(2, 1, 32)])
    assert result.path is None and not tuning.exists()
    assert _cpu.blocking(4).source.startswith("analytical (`rnn-xp tune` measures")


def test_the_analytical_choice_stays_unless_another_is_clearly_faster():
    a, b = _tune.Candidate(6, 4, 256), _tune.Candidate(6, 4, 128)
    assert _tune.choose({a: 1.0, b: 0.98}, a) == a  # within the margin: noise, keep the model's choice
    assert _tune.choose({a: 1.0, b: 0.95}, a) == b
    assert _tune.choose({a: 1.0, b: 1.2}, a) == a


@pytest.mark.parametrize("registers,vector_bytes,l1d", [(32, 64, 32 << 10), (32, 64, 48 << 10), (16, 32, 32 << 10)])
def test_the_candidates_fit_the_registers_and_the_k_range(registers, vector_bytes, l1d):
    for mr, v in _tune.tiles(registers):
        assert mr * v + 1 <= registers and (mr * v + v + 1 <= registers or registers == 16)
        for f in _tune.L1_FOOTPRINTS:
            kc = _tune.kc_for(f * l1d, v, vector_bytes)
            assert _tune.KC_RANGE[0] <= kc <= _tune.KC_RANGE[1] and kc % 8 == 0


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def _entry(**kw):
    return {"mr": 4, "v": 2, "kc": 96, "measured": "2026-01-01 00:00Z", **kw}


def test_a_kept_choice_is_used_and_an_override_still_wins(tuning, monkeypatch):
    _write(tuning, {"format": 1, "cpus": {_cpu.cpu_key(): _entry()}})
    b = _cpu.blocking(4)
    assert (b.mr, b.v, b.kc) == (4, 2, 96) and "2026-01-01" in b.source
    assert (_cpu.blocking(8).mr, _cpu.blocking(8).kc) == (4, 96)  # float64: the same tile and k block
    assert "measured by rnn-xp tune (2026-01-01 00:00Z)" in _cpu.describe()
    _write(tuning, {"format": 1, "cpus": {_cpu.cpu_key(): _entry(measured=["x" * 10**4])}})
    _cpu.blocking.cache_clear()
    assert _cpu.blocking(4).source == "measured by rnn-xp tune (undated)"
    monkeypatch.setenv("RNN_XP_BLOCKING", "5,1,40")
    _cpu.blocking.cache_clear()
    b = _cpu.blocking(4)
    assert (b.mr, b.v, b.kc) == (5, 1, 40) and b.source == "RNN_XP_BLOCKING=5,1,40"


def test_another_cpus_choice_is_not_used(tuning):
    _write(tuning, {"cpus": {"Some Other CPU | 256-bit x 16 | L1d 48 KiB | L2 2048 KiB": _entry()}})
    b, ana = _cpu.blocking(4), _cpu.analytical(4)
    assert (b.mr, b.v, b.kc) == (ana.mr, ana.v, ana.kc) and b.source.startswith("analytical (")


@pytest.mark.parametrize(
    "content,why",
    [
        ("{not json", "JSONDecodeError"),
        ("[1, 2]", "not a tuning file"),
        ('{"cpus": [1]}', "not a tuning file"),
        ("\udcff", "UnicodeEncodeError"),  # written below as undecodable bytes
        ({"mr": "6", "v": 4, "kc": 256}, "expected three integers"),
        ({"mr": True, "v": 4, "kc": 256}, "expected three integers"),
        ({"mr": 0, "v": 4, "kc": 256}, "expected 1 <= mr <= 16"),
        ({"mr": 6, "v": 9, "kc": 256}, "expected 1 <= mr <= 16"),
        ({"mr": 6, "v": 4, "kc": 10**9}, "expected 1 <= mr <= 16"),
        ({"v": 4, "kc": 256}, "expected three integers"),
        ("entry", "not an object"),
        ("huge", "more than any tuning file"),
        ("directory", "not a regular file"),
        ("pipe", "not a regular file"),
        ("[" * 100000 + "]" * 100000, "RecursionError"),
    ],
)
def test_a_broken_tuning_file_is_ignored_and_explain_says_why(tuning, content, why):
    if content == "\udcff":
        tuning.parent.mkdir(parents=True)
        tuning.write_bytes(b'{"cpus": {"\xff\xfe": 1}}')
        why = "UnicodeDecodeError"
    elif content == "entry":
        _write(tuning, {"cpus": {_cpu.cpu_key(): [6, 4, 256]}})
    elif content == "huge":
        _write(tuning, '{"cpus": {}, "pad": "' + "x" * (_cpu.TUNING_FILE_MAX + 1) + '"}')
    elif content == "directory":
        tuning.mkdir(parents=True)
    elif content == "pipe":  # reading it would wait for a writer forever
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes here")
        tuning.parent.mkdir(parents=True)
        os.mkfifo(tuning)
    elif isinstance(content, dict):
        _write(tuning, {"cpus": {_cpu.cpu_key(): content}})
    else:
        _write(tuning, content)
    b, ana = _cpu.blocking(4), _cpu.analytical(4)  # never raises
    assert (b.mr, b.v, b.kc) == (ana.mr, ana.v, ana.kc)
    assert b.source.startswith("analytical; tuning file") and "ignored" in b.source and why in b.source, b.source
    assert "rnn-xp tune" in b.source
    params = rnn_xp.init("gru", 3, 5, seed=0)
    x = np.zeros((2, 4, 3), np.float32)
    assert "ignored" in str(rnn_xp.explain(x, params))  # a call runs, and says why
    rnn_xp.forward(x, params)


def test_saving_keeps_other_cpus_and_replaces_a_broken_file(tuning):
    _write(tuning, {"cpus": {"Other CPU": _entry()}})
    _tune._save(_cpu.cpu_key(), _tune.Candidate(6, 4, 128), _tune.Candidate(6, 4, 256), {})
    cpus = json.loads(tuning.read_text())["cpus"]
    assert cpus["Other CPU"] == _entry() and cpus[_cpu.cpu_key()]["kc"] == 128
    _write(tuning, "{broken")
    _tune._save(_cpu.cpu_key(), _tune.Candidate(6, 4, 128), _tune.Candidate(6, 4, 256), {})
    assert json.loads(tuning.read_text())["cpus"][_cpu.cpu_key()]["kc"] == 128
    assert [p.name for p in tuning.parent.iterdir()] == ["tuning.json"]  # no temporary file left behind


def test_the_tuning_file_location(monkeypatch, tmp_path):
    monkeypatch.delenv("RNN_XP_TUNING_FILE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _cpu.tuning_file() == tmp_path / "rnn_xp" / "tuning.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cpu.tuning_file() == tmp_path / "home" / ".cache" / "rnn_xp" / "tuning.json"
    for off in ("off", "OFF", "none", "0"):
        monkeypatch.setenv("RNN_XP_TUNING_FILE", off)
        assert _cpu.tuning_file() is None
        _cpu.blocking.cache_clear()
        assert "tuning file off" in _cpu.blocking(4).source
    _cpu.blocking.cache_clear()
    monkeypatch.setenv("RNN_XP_TUNING_FILE", "off")
    with pytest.raises(ValueError, match="RNN_XP_TUNING_FILE is 'off'"):
        _tune._save("k", _tune.Candidate(6, 4, 128), _tune.Candidate(6, 4, 256), {})


def test_the_command_line_tunes_shows_and_forgets(tuning, monkeypatch, capsys):
    monkeypatch.setattr(_tune, "tune", functools.partial(_tune.tune, calls=1, candidates=[(2, 1, 32)]))
    assert cli.main(["tune", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "round 1/1" in out and "score" in out and f"kept for this CPU in {tuning}" in out, out
    assert _cpu.cpu_key() in json.loads(tuning.read_text())["cpus"]
    assert cli.main(["tune", "--show"]) == 0
    out = capsys.readouterr().out
    assert f"tuning file: {tuning}" in out and f"this CPU: {_cpu.cpu_key()}" in out and "block sizes" in out
    assert cli.main(["tune", "--forget"]) == 0
    assert "removed entry for this CPU" in capsys.readouterr().out
    assert json.loads(tuning.read_text())["cpus"] == {}
    assert cli.main(["tune", "--forget"]) == 0
    assert "no entry for this CPU" in capsys.readouterr().out
    monkeypatch.setattr(_tune, "_load_average", lambda: 99.0)  # other work on the cores: the output says so
    assert cli.main(["tune", "--no-save", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "not saved (--no-save)" in out and "the machine was busy" in out and "99.0 then 99.0" in out, out
    assert json.loads(tuning.read_text())["cpus"] == {}


def test_the_command_line_refuses_bad_options_and_unwritable_files(tuning, monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["tune", "--rounds", "0"])
    assert e.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["tune", "--show", "--forget"])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RNN_XP_TUNING_FILE", str(blocker / "tuning.json"))  # its folder is a file
    monkeypatch.setattr(_tune, "tune", functools.partial(_tune.tune, calls=1, candidates=[(2, 1, 32)]))
    assert cli.main(["tune", "--rounds", "1"]) == 2
    err = capsys.readouterr().err
    assert "could not be written" in err and "--no-save" in err, err


@pytest.mark.parametrize("again,kept", [(0.90, True), (1.01, False)])
def test_a_faster_choice_must_be_confirmed_head_to_head(tuning, monkeypatch, capsys, again, kept):
    """A candidate 10% faster in the side-by-side step is kept only if the head-to-head run agrees."""
    ana = _cpu.analytical(4)
    analytical, pick = _tune.Candidate(ana.mr, ana.v, ana.kc), _tune.Candidate(2, 1, 32)
    runs = []

    def measured(cases_of, cands, rounds, calls, progress):  # the timings, made up: the logic is tested
        runs.append(list(cands))
        fast = 0.9 if len(runs) == 1 else again
        return {c: [1.0 if c == analytical else fast] * len(SMALL) for c in cands}

    monkeypatch.setattr(_tune, "_measure", measured)
    monkeypatch.setattr(_tune, "tune", functools.partial(_tune.tune, calls=1, candidates=[tuple(pick)]))
    assert cli.main(["tune", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert runs == [[analytical, pick], [analytical, pick]]
    saved = json.loads(tuning.read_text())["cpus"][_cpu.cpu_key()]
    assert (saved["mr"], saved["v"], saved["kc"]) == tuple(pick if kept else analytical)
    versus = f"{pick} took 0.900 of its time, {again:.3f} head to head"
    if kept:
        assert f"chosen: {pick}, faster than the analytical {analytical}: {versus};" in out, out
    else:
        assert f"chosen: {analytical}, the analytical choice: {versus} (not confirmed);" in out, out
