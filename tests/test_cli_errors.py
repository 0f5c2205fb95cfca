"""User mistakes: one line on stderr naming the file or flag, exit code 2, no traceback."""
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import kws, write_tone


def assert_user_error(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert str(n) in p.stderr, (n, p.stderr)


def test_help_on_every_command():
    for cmd in ["synth", "fetch", "train", "export", "predict", "evaluate", "demo", "stream", "devices", "record", "stream-eval", "calibrate", "train-head"]:
        p = kws(cmd, "--help")
        assert "--help" in p.stdout or "-h" in p.stdout
    assert "COMMAND" in kws("--help").stdout


def test_missing_and_empty_data_folders(tmp_path):
    assert_user_error(kws("train", "--data", tmp_path / "nope", "--out", tmp_path / "r", check=False), "nope", "no such folder")
    (tmp_path / "empty").mkdir()
    assert_user_error(kws("train", "--data", tmp_path / "empty", "--out", tmp_path / "r", check=False), "empty", "no audio files")


def test_corrupt_and_non_audio_files(tmp_path):
    d = tmp_path / "d"
    for w in ("yes", "no"):
        (d / w).mkdir(parents=True)
        for k in range(3):
            write_tone(d / w / f"s{k}_nohash_0.wav")
    (d / "yes" / "broken_nohash_0.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    p = kws("train", "--data", d, "--out", tmp_path / "r", "--epochs", "1", "--cache-dir", tmp_path / "c", check=False)
    assert_user_error(p, "broken_nohash_0.wav")
    (d / "yes" / "broken_nohash_0.wav").unlink()
    (d / "no" / "notes_nohash_0.wav").write_text("this is text, not audio")
    p = kws("train", "--data", d, "--out", tmp_path / "r", "--epochs", "1", "--cache-dir", tmp_path / "c", check=False)
    assert_user_error(p, "notes_nohash_0.wav", "not a readable audio file")


@pytest.mark.parametrize("args,needle", [
    (["train", "--data", "x", "--out", "y", "--epochs", "0"], "--epochs"),
    (["train", "--data", "x", "--out", "y", "--lr", "-1"], "--lr"),
    (["train", "--data", "x", "--out", "y", "--dropout", "1.5"], "--dropout"),
    (["train", "--data", "x", "--out", "y", "--task", "99"], "--task"),
    (["train", "--data", "x", "--out", "y", "--ema-decay", "1"], "--ema-decay"),
    (["train", "--data", "x", "--out", "y", "--n-mfcc", "41"], "--n-mfcc"),
    (["train", "--data", "x", "--out", "y", "--frame-stack", "9"], "--frame-stack"),
    (["train", "--data", "x", "--out", "y", "--conv", "65"], "--conv"),
    (["train", "--data", "x", "--out", "y", "--mfcc-tower", "-1"], "--mfcc-tower"),
    (["train", "--data", "x", "--out", "y", "--f-min", "4000"], "--f-min"),
    (["train", "--data", "x", "--out", "y", "--trim-prob", "1"], "--trim-prob"),
    (["train", "--data", "x", "--out", "y", "--set", "train.augment.vtlp=0.9"], "--set train.augment.vtlp"),
    (["train", "--data", "x", "z", "--out", "y", "--repeat", "1"], "--repeat"),
    (["train", "--data", "x", "--out", "y", "--repeat", "0"], "--repeat"),
    (["synth", "--words", ",,"], "--words"),
    (["synth", "--engines", "festival"], "--engines"),
    (["record", "--speaker", "a_b"], "--speaker"),
    (["record", "--takes", "0"], "--takes"),
    (["stream-eval", "--model", "m.onnx", "--data", "d", "--minutes", "abc"], "--minutes"),
    (["stream", "--model", "m.onnx", "--wav", "x.wav", "--margin-ms", "-5"], "--margin-ms"),
])
def test_bad_flag_values(args, needle):
    assert_user_error(kws(*args, check=False), needle)


def test_conv_needs_every_mel_band(tiny_data, tmp_path):
    p = kws("train", "--data", tiny_data, "--out", tmp_path / "r", "--conv", "4", "--n-mfcc", "20",
            "--cache-dir", tmp_path / "c", check=False)
    assert_user_error(p, "--conv needs --n-mfcc 40", "got --n-mfcc 20")
    assert not (tmp_path / "r" / "last.pt").exists()


def test_conv_default_follows_n_mfcc():
    """Without --conv: the default convolution with all 40 coefficients, none with fewer."""
    from pipeline.cli import build_parser
    from pipeline.train_cli import _run_config
    from pipeline.config import ModelConfig
    parse = lambda *a: build_parser().parse_args(["train", "--data", "d", "--out", "r", *a])
    assert _run_config(parse(), ("a", "b")).model.conv_channels == ModelConfig.conv_channels > 0
    assert _run_config(parse("--n-mfcc", "20"), ("a", "b")).model.conv_channels == 0
    assert _run_config(parse("--conv", "0"), ("a", "b")).model.conv_channels == 0
    assert _run_config(parse("--conv", "8"), ("a", "b")).model.conv_channels == 8


def test_checkpoint_from_another_config(tiny_run, tiny_data, tmp_path):
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    # resume reads the config from the checkpoint; a checkpoint with other labels is refused
    import torch
    ck = torch.load(run / "last.pt", weights_only=True)
    ck["config"]["labels"] = ["a", "b", "c", "d", "e"]
    torch.save(ck, run / "last.pt")
    p = kws("train", "--data", tiny_data, "--out", run, "--resume", "--cache-dir", tmp_path / "c", check=False)
    assert_user_error(p, "last.pt")
    (run / "best.pt").write_bytes(b"garbage")
    assert_user_error(kws("export", run, check=False), "best.pt", "not a kws checkpoint")
    assert_user_error(kws("export", tmp_path / "nothing", check=False), "no such checkpoint")


def test_evaluate_and_predict_errors(tiny_model, tmp_path):
    assert_user_error(kws("evaluate", "--model", tiny_model, "--data", tmp_path / "none", check=False), "none")
    assert_user_error(kws("predict", "--model", tiny_model, tmp_path / "a.wav", check=False), "a.wav")
    sf.write(tmp_path / "silent.wav", np.zeros((0,), np.float32), 16000)
    assert_user_error(kws("predict", "--model", tiny_model, tmp_path / "silent.wav", check=False), "silent.wav", "no samples")


def test_stream_names_the_missing_streaming_graphs(tiny_model, real_clips, tmp_path):
    """A model copied without its .frontend/.frames graphs (what a device user may forget)."""
    lone = tmp_path / "model.onnx"
    shutil.copy(tiny_model, lone)
    p = kws("stream", "--model", lone, "--wav", real_clips[0], check=False)
    assert_user_error(p, "model.frontend.onnx: no such model file", "copy model.frontend.onnx and model.frames.onnx")
    assert len(p.stderr.strip().splitlines()) == 1
