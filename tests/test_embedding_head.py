"""The speech embedding in torch (pipeline/embedding_net.py) against its ONNX graphs, and the embedding
head (`kws train-head`, `kws export`) through the real command line, stream included."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import WORDS, kws
from pipeline.embedding_net import TAPS_FROM, load_pretrained, split_net, stem_positions
from pipeline.speech_embedding import window_starts
from pipeline.runtime import OnnxModel, sibling
from pipeline.speech_embedding import fetch_models
from pipeline.stream import StreamingScorer


@pytest.fixture(scope="module")
def pretrained():
    return load_pretrained()


def test_torch_embedding_equals_onnx(pretrained):
    logmel, net = pretrained
    d = fetch_models()
    rng = np.random.default_rng(0)
    # log-mel: loud noise (the upstream top-dB floor never binds), upstream frames start 56 samples later
    x = (0.1 * rng.standard_normal((3, 16000))).astype(np.float32)
    ref = ort.InferenceSession(str(d / "melspectrogram.onnx")).run(None, {"input": x * 32767.0})[0][:, 0] / 10 + 2
    with torch.no_grad():
        got = logmel(torch.from_numpy(x[:, TAPS_FROM:])).numpy()
    assert got.shape == (3, 98, 32) and ref.shape == (3, 97, 32)
    assert np.abs(got[:, :97] - ref).max() < 1e-4
    w = rng.standard_normal((5, 76, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(d / "embedding_model.onnx")).run(None, {"input_1": w[..., None]})[0].reshape(5, 96)
    with torch.no_grad():
        got = net(torch.from_numpy(w)).numpy()
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()
    assert all(not p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("stride,time_stride,field", [(10, 2, 22), (5, 1, 5), (20, 4, 56)])
def test_stem_and_tail_equal_the_network(pretrained, stride, time_stride, field):
    """split_net: the stem as a stream (from zero states, then on in calls of a few frames each with the
    state of the call before), its positions sliced per window, then the tail, equals the whole network
    on each window (the stream's stem cache rests on this)."""
    _, net = pretrained
    stem, tail = split_net(net, stride)
    assert (stem.time_stride, stem.field) == (time_stride, field) and len(stem.layers) + len(tail.layers) == len(net.layers)
    n, d = stem_positions(stem, 76), time_stride
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 80 + 4 * stride, 32)).astype(np.float32))
    with torch.no_grad():
        out, states, calls = [], stem.zero_states(), [80] + [stride] * 4
        for a, b in zip(np.cumsum([0] + calls[:-1]), np.cumsum(calls)):
            y, *states = stem(x[:, a:b], *states)
            assert y.shape[2] == (b - a) // d
            out.append(y)
        positions = torch.cat(out, dim=2)[:, :, field // d - 1:]        # position k: frames d k .. d k + field - 1
        for k in range(5):
            o = k * stride // d
            ref = net(x[:, k * stride:k * stride + 76])
            assert (tail(positions[:, :, o:o + n]) - ref).abs().max() < 1e-5 * ref.abs().max()


def test_head_config_round_trip_and_checks():
    from pipeline.config import FeatureConfig, HeadConfig
    from pipeline.embedding_head import check_features
    from pipeline.errors import ConfigError
    cfg = HeadConfig(windows=3, stride=10, context=1, seed=4)
    assert HeadConfig.from_dict(json.loads(cfg.to_json())) == cfg
    for bad in ({"context": 6}, {"stride": 0}, {"copies": 0}, {"dropout": 1.0}, {"pooling": "max"}):
        with pytest.raises(ConfigError):
            HeadConfig(**bad)
    with pytest.raises(ConfigError, match="unknown HeadConfig keys"):
        HeadConfig.from_dict({"windowz": 3})
    check_features(FeatureConfig(), HeadConfig())
    with pytest.raises(ConfigError, match="n_fft 400"):
        check_features(FeatureConfig(n_fft=512), HeadConfig())
    with pytest.raises(ConfigError, match="need 96 frames"):
        check_features(FeatureConfig(clip_samples=12000), HeadConfig())


def test_window_starts():
    assert window_starts(98, 5, 5) == [2, 7, 12, 17, 22]
    assert window_starts(76, 1, 5) == [0]
    with pytest.raises(ValueError):
        window_starts(97, 5, 6)


@pytest.fixture(scope="module")
def head_run(tiny_run, tiny_data, tmp_path_factory):
    """A copy of the tiny run with a head trained on the tiny data, exported (FP32 and INT8)."""
    run = tmp_path_factory.mktemp("headrun") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*.onnx", "eval-*"))
    p = kws("train-head", run, "--data", tiny_data, "--copies", "2", "--epochs", "12",
            "--cache-dir", tmp_path_factory.mktemp("cache"), "--jobs", "2")
    assert "validation accuracy: head" in p.stdout and (run / "head.pt").is_file()
    assert (run / "head_curves.png").stat().st_size > 1000
    p = kws("export", run, "--int8")
    assert "with the embedding head" in p.stdout
    return run


def test_head_export_metadata_and_accuracy(head_run, tiny_data):
    m = OnnxModel(head_run / "model.onnx")
    meta = m.session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["embedding_head"])["windows"] == 3
    frames = OnnxModel(sibling(head_run / "model.onnx", "frames"))
    assert frames.session.get_inputs()[0].shape[2] == m.config.features.n_mfcc + 32
    cached = OnnxModel(sibling(head_run / "model.onnx", "cached"))          # the stream's vector cache
    assert [tuple(i.shape[1:]) for i in cached.session.get_inputs()] == [(98, m.config.features.n_mfcc), (3, 96)]
    stem = OnnxModel(sibling(head_run / "model.onnx", "embed_stem")).session
    assert stem.get_inputs()[0].shape[2] == 32 and json.loads(stem.get_modelmeta().custom_metadata_map["embed_stem"]) \
        == {"time_stride": 2, "field": 22}                  # the default stride 10: cut before the 2nd time pooling
    assert OnnxModel(sibling(head_run / "model.onnx", "embed_tail")).session.get_inputs()[0].shape[1:] == [72, 28, 8]
    scorer = StreamingScorer(head_run / "model.int8.onnx")
    assert scorer.cached.path.name == "model.cached.int8.onnx" and scorer.stem.path.name == "model.embed_stem.onnx"
    metrics = json.loads((head_run / "head_metrics.json").read_text())
    assert metrics["val_acc_head"] > 0.6 and len(metrics["loss"]) == 12     # 5 labels: chance 0.2
    for model in ("model.onnx", "model.int8.onnx"):
        p = kws("evaluate", "--model", head_run / model, "--data", tiny_data, "--json", head_run / "ev.json")
        assert json.loads((head_run / "ev.json").read_text())["accuracy"] > 0.6, p.stdout


def test_pooling_geometric_by_default_mean_for_an_older_head(head_run, real_clips, tmp_path):
    """model.onnx pools the two models as its head says: the normalised geometric mean of the
    BiLSTM's and the head's probabilities (computed here from the two torch models apart), and for a
    head.pt saved before the choice existed (no 'pooling' in its config), their arithmetic mean."""
    from pipeline.audio import load_clip
    from pipeline.checkpoint import load_model
    from pipeline.embedding_head import load_head
    from pipeline.features import MFCC
    from pipeline.head_train import THRESHOLD_FLOOR
    cfg, clf = load_model(head_run)
    hcfg, head, logmel = load_head(head_run / "head.pt", cfg.labels, cfg.features)
    assert hcfg.pooling == "geometric"
    assert min(json.loads(OnnxModel(head_run / "model.onnx").session.get_modelmeta().custom_metadata_map[
        "thresholds"]).values()) >= THRESHOLD_FLOOR["geometric"] == 0.9
    x = np.stack([load_clip(f, 16000, cfg.features.clip_samples) for f in real_clips])
    with torch.no_grad():
        pl = torch.softmax(clf(MFCC(cfg.features)(torch.from_numpy(x))), -1).double().numpy()
        ph = head(logmel(torch.from_numpy(x))).exp().double().numpy()
    geo = np.sqrt(pl * ph) / np.sqrt(pl * ph).sum(1, keepdims=True)
    assert np.abs(OnnxModel(head_run / "model.onnx").scores(x) - geo).max() < 1e-4
    assert np.abs(geo - (pl + ph) / 2).max() > 1e-3                      # the two poolings differ on these clips
    old = tmp_path / "old"
    shutil.copytree(head_run, old, ignore=shutil.ignore_patterns("*.onnx"))
    ck = torch.load(old / "head.pt", weights_only=True)
    del ck["head_config"]["pooling"]
    torch.save(ck, old / "head.pt")
    kws("export", old)
    m = OnnxModel(old / "model.onnx")
    assert json.loads(m.session.get_modelmeta().custom_metadata_map["embedding_head"])["pooling"] == "mean"
    assert np.abs(m.scores(x) - (pl + ph) / 2).max() < 1e-4


@pytest.mark.parametrize("hop_ms", [100, 30])
def test_head_streaming_equals_offline(head_run, real_clips, tmp_path, hop_ms):
    """The stream's stem and vector caches (model.embed_stem/.embed_tail/.cached graphs) against the
    offline waveform model, and against the stream without them (the head's frames graph re-embedding
    every window). At hop 30 ms successive windows start at frames of either parity: two stem grids."""
    from pipeline.audio import read_audio
    rng = np.random.default_rng(2)
    x = np.concatenate([read_audio(p, 16000) for p in real_clips[:2]] + [0.003 * rng.standard_normal(4000)]).astype(np.float32)

    def stream(model):
        scorer = StreamingScorer(model, hop_ms=hop_ms)
        results = []
        for i in range(0, len(x), 1234):
            results += scorer.push(x[i:i + 1234])
        return scorer, results

    scorer, results = stream(head_run / "model.onnx")
    assert scorer.stem is not None and len(results) >= 5
    if hop_ms == 100:           # 10 frames per hop, windows 10 frames apart: 1 new window per hop
        assert scorer.embedded == 3 + (len(results) - 1)
        # the stem: the first 3 windows' 96 frames from frame 2, then each hop's 10 new frames once
        assert scorer.stem_frames == 96 + 10 * (len(results) - 1)
    starts = [scorer.window_start_sample(t) for t, _ in results]
    probs = np.stack([p for _, p in results])
    ref = OnnxModel(head_run / "model.onnx").scores(np.stack([x[s:s + 16000] for s in starts]))
    assert np.abs(probs - ref).max() < 1e-5
    for name in ("model.onnx", "model.frames.onnx", "model.frontend.onnx"):
        shutil.copy(head_run / name, tmp_path / name)
    plain, again = stream(tmp_path / "model.onnx")
    assert "model.embed_stem.onnx, model.embed_tail.onnx, model.cached.onnx" in plain.note and not scorer.note
    assert plain.stem is None and np.abs(np.stack([p for _, p in again]) - probs).max() < 1e-5


def test_head_model_streams_without_torch(head_run, real_clips):
    import subprocess
    import sys
    from conftest import REPO
    from test_export_runtime import BLOCK_TORCH
    p = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "stream", "--model", str(head_run / "model.onnx"),
                        "--wav", str(real_clips[0]), "--json"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_train_with_head_flag(tiny_data, tmp_path):
    run = tmp_path / "run"
    p = kws("train", "--data", tiny_data, "--out", run, "--epochs", "1", "--hidden", "16", "--layers", "1",
            "--cache-dir", tmp_path / "cache", "--device", "cpu", "--jobs", "2", "--head")
    assert "training the embedding head" in p.stdout and (run / "head.pt").is_file()
    thresholds = torch.load(run / "head.pt", weights_only=True)["thresholds"]
    assert thresholds and min(thresholds.values()) >= 0.7            # the head's floor (head_train.py)
    p = kws("train", "--data", tiny_data, "--out", run, "--epochs", "1", "--hidden", "16", "--layers", "1",
            "--cache-dir", tmp_path / "cache", "--device", "cpu", "--jobs", "2")
    assert "head.pt is from an earlier `kws train-head`" in p.stdout
    p = kws("train", "--data", tiny_data, "--out", tmp_path / "tuned", "--init", run, "--epochs", "1",
            "--cache-dir", tmp_path / "cache", "--device", "cpu", "--jobs", "2")
    assert "has an embedding head" in p.stdout and "add --head" in p.stdout      # fine-tuning without one: said


def test_head_repeats_own_recordings(head_run, tiny_data, tmp_path):
    """`kws train-head --repeat 1 4`: each training clip of the second folder is used 4 times (an own
    voice among many synthetic ones, as in the README's adaptation recipe)."""
    from pipeline.datasets.speech_commands import hash_split
    speaker = next(f"me{i}" for i in range(100) if hash_split(f"me{i}") == "train")
    mine = tmp_path / "mine"
    for w in WORDS:
        (mine / w).mkdir(parents=True)
        for k, f in enumerate(sorted((tiny_data / w).glob("*.wav"))[:2]):
            shutil.copy(f, mine / w / f"{speaker}_nohash_{k}.wav")
    run = tmp_path / "run"
    shutil.copytree(head_run, run, ignore=shutil.ignore_patterns("*.onnx", "eval-*", "head*"))
    p = kws("train-head", run, "--data", tiny_data, mine, "--repeat", "1", "4", "--epochs", "2",
            "--cache-dir", tmp_path / "cache", "--jobs", "2")
    metrics = json.loads((run / "head_metrics.json").read_text())
    assert metrics["data_repeats"] == [1, 4] and metrics["train_uses"] == metrics["train_clips"] + 3 * 2 * len(WORDS), p.stdout
    p = kws("train-head", run, "--data", tiny_data, mine, "--repeat", "4", check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--repeat: give one number per --data folder" in p.stderr


def test_export_without_head(head_run, tmp_path):
    p = kws("export", head_run, "--no-head", "--out", tmp_path / "plain.onnx")
    assert "embedding head" not in p.stdout
    assert not any((tmp_path / f"plain.{k}.onnx").exists() for k in ("embed_stem", "embed_tail", "cached"))
    m = OnnxModel(tmp_path / "plain.onnx")
    assert "embedding_head" not in m.session.get_modelmeta().custom_metadata_map
    assert OnnxModel(tmp_path / "plain.frames.onnx").session.get_inputs()[0].shape[2] == m.config.features.n_mfcc


def test_export_notes_a_missing_head(tiny_run, tmp_path):
    """A run without head.pt exports the BiLSTM alone and says so, with the command that adds the head."""
    p = kws("export", tiny_run, "--out", tmp_path / "plain.onnx")
    note = [l for l in p.stdout.splitlines() if l.startswith("note: no embedding head")]
    assert len(note) == 1 and f"kws train-head {tiny_run}" in note[0]
    assert not (tmp_path / "plain.cached.onnx").exists()


def test_head_bad_inputs(head_run, tiny_data, tmp_path):
    p = kws("train-head", tmp_path / "nothing", "--data", tiny_data, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no such checkpoint" in p.stderr
    # a head trained for other words than the run's
    other = tmp_path / "other"
    shutil.copytree(head_run, other, ignore=shutil.ignore_patterns("*.onnx"))
    ck = torch.load(other / "head.pt", weights_only=True)
    ck["labels"] = list(reversed(ck["labels"]))
    torch.save(ck, other / "head.pt")
    p = kws("export", other, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "trained for other words" in p.stderr
    (other / "head.pt").write_bytes(b"not a checkpoint")
    p = kws("export", other, check=False)
    assert p.returncode == 2 and "not an embedding head" in p.stderr
    p = kws("train-head", head_run, "--data", tiny_data, "--copies", "0", check=False)
    assert p.returncode == 2 and "--copies" in p.stderr
    assert set(WORDS) <= set(OnnxModel(head_run / "model.onnx").labels)


def test_stream_refuses_cached_graphs_of_another_export(head_run, tmp_path):
    from pipeline.errors import StreamError
    for name in ("model.onnx", "model.frames.onnx", "model.frontend.onnx", "model.embed_stem.onnx", "model.embed_tail.onnx",
                 "model.cached.onnx"):
        shutil.copy(head_run / name, tmp_path / name)
    m = onnx.load(str(tmp_path / "model.cached.onnx"))
    for p in m.metadata_props:
        if p.key == "embedding_head":
            p.value = json.dumps({**json.loads(p.value), "seed": 99})
    onnx.save(m, str(tmp_path / "model.cached.onnx"))
    with pytest.raises(StreamError, match="model.cached.onnx: from another export"):
        StreamingScorer(tmp_path / "model.onnx")
