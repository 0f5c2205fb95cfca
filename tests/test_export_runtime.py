"""The exported graphs against PyTorch, their metadata, INT8, and the torch-free device path."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from conftest import REPO, WORDS, kws
from pipeline.audio import load_clip
from pipeline.checkpoint import load_model
from pipeline.model import WaveformClassifier
from pipeline.runtime import ModelError, OnnxModel, sibling


@pytest.fixture(scope="module")
def clips(real_clips):
    return np.stack([load_clip(p, 16000, 16000) for p in real_clips])


def test_onnx_matches_pytorch_on_real_clips(tiny_run, tiny_model, clips):
    cfg, clf = load_model(tiny_run)
    with torch.no_grad():
        ref = WaveformClassifier(cfg.features, clf, use_dft=False)(torch.from_numpy(clips)).numpy()
    got = OnnxModel(tiny_model).scores(clips)
    assert got.shape == (len(clips), len(cfg.labels))
    assert np.abs(got - ref).max() < 1e-4


def test_frames_and_frontend_graphs_compose_to_the_waveform_graph(tiny_model, clips):
    m, fe, fr = OnnxModel(tiny_model), OnnxModel(sibling(tiny_model, "frontend")), OnnxModel(sibling(tiny_model, "frames"))
    frames = np.concatenate([fe.run(c[None]) for c in clips])
    assert frames.shape == (len(clips), 98, 40)
    assert np.abs(fr.run(frames) - m.scores(clips)).max() < 1e-5


def test_metadata_and_checker(tiny_run, tiny_model):
    model = onnx.load(str(tiny_model))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    cfg, _ = load_model(tiny_run)
    assert json.loads(meta["labels"]) == list(cfg.labels) == list(WORDS) + ["_unknown_", "_silence_"]
    assert meta["sample_rate"] == "16000"
    m = OnnxModel(tiny_model)
    assert m.config == cfg and set(m.thresholds) == set(WORDS)
    assert isinstance(m.session.get_inputs()[0].shape[0], str)          # dynamic batch


def test_int8_model_agrees_mostly(tiny_model, clips):
    q = OnnxModel(tiny_model.with_name("model.int8.onnx"))
    assert q.labels == OnnxModel(tiny_model).labels
    a, b = OnnxModel(tiny_model).scores(clips), q.scores(clips)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.8
    assert tiny_model.with_name("model.int8.onnx").stat().st_size < tiny_model.stat().st_size
    ops = {n.op_type for n in onnx.load(str(tiny_model.with_name("model.int8.onnx"))).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops


def test_constant_folding_before_quantisation_keeps_the_graph_s_values():
    """Chains of constant nodes (as the exporter builds the LSTM weights: Unsqueeze -> Concat) fold
    to initializers, which onnxruntime 1.30's pre-processing left unfolded, and the outputs stay."""
    from onnx import TensorProto, helper, numpy_helper
    from pipeline.export import _fold_constants
    import onnxruntime as ort
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([0], np.int64))),
             helper.make_node("Unsqueeze", ["w1", "axes"], ["u1"]),
             helper.make_node("Unsqueeze", ["w2", "axes"], ["u2"]),
             helper.make_node("Concat", ["u1", "u2"], ["w"], axis=0),          # (2, 3, 4)
             helper.make_node("MatMul", ["x", "w"], ["y"])]                    # x (2, 5, 3) @ w -> (2, 5, 4)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 4])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(np.zeros(1, np.float32), "unused")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    before = run(model)
    folded = _fold_constants(model)
    assert [n.op_type for n in folded.graph.node] == ["MatMul"]
    assert {t.name for t in folded.graph.initializer} == {"w"}
    assert np.array_equal(run(folded), before)


def test_trained_model_recognises_held_out_voices(tiny_model, tiny_data):
    p = kws("evaluate", "--model", tiny_model, "--data", tiny_data, "--split", "test", "--json",
            tiny_model.parent / "tiny-test.json")
    report = json.loads((tiny_model.parent / "tiny-test.json").read_text())
    words = [report["per_class"][w]["recall"] for w in WORDS]
    assert np.mean(words) > 0.8 and report["accuracy"] > 0.5, p.stdout
    assert (tiny_model.parent / "eval-tiny-test" / "confusion.png").stat().st_size > 1000


def test_predict_prints_label_per_file(tiny_model, real_clips):
    p = kws("predict", "--model", tiny_model, *real_clips)
    lines = p.stdout.strip().splitlines()
    assert len(lines) == len(real_clips)
    for line, f in zip(lines, real_clips):
        path, label, score = line.split("\t")
        assert path == str(f) and 0 <= float(score) <= 1


BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name == "torchaudio":
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _Block())
from pipeline.cli import main
rc = main(sys.argv[1:])
assert "torch" not in sys.modules
sys.exit(rc)
"""


@pytest.mark.parametrize("cmd", ["predict", "evaluate", "stream"])
def test_device_path_never_imports_torch(cmd, tiny_model, tiny_data, real_clips):
    args = {"predict": ["predict", "--model", tiny_model, real_clips[0]],
            "evaluate": ["evaluate", "--model", tiny_model, "--data", tiny_data, "--jobs", "1"],
            "stream": ["stream", "--model", tiny_model, "--wav", real_clips[0]]}[cmd]
    p = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_missing_and_unlabelled_models(tmp_path, tiny_model):
    with pytest.raises(ModelError, match="no such model"):
        OnnxModel(tmp_path / "nope.onnx")
    m = onnx.load(str(tiny_model))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelError, match="no 'labels'"):
        OnnxModel(tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        OnnxModel(tmp_path / "junk.onnx")


def test_record_never_imports_torch(tiny_model, tmp_path):
    """`kws record` reads the words from the ONNX model and opens the device without torch (here the
    device does not exist: a one-line error, exit 2, and still no torch)."""
    args = ["record", "--model", tiny_model, "--out", tmp_path / "mine", "--device", "no-such-mic-xyz"]
    p = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and ("no-such-mic-xyz" in p.stderr or "no audio input" in p.stderr
                                            or "sounddevice" in p.stderr), p.stderr
