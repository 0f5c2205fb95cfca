"""`kws fetch` against a tiny archive in the Speech Commands layout, served from a file:// URL."""
import tarfile

import numpy as np
import soundfile as sf

from conftest import kws
from pipeline.fetch import sha256_of


def make_archive(tmp_path):
    src = tmp_path / "src"
    for w in ("yes", "no"):
        (src / w).mkdir(parents=True)
        for k in range(3):
            sf.write(src / w / f"abcd{k}_nohash_0.wav", np.zeros(16000, np.float32), 16000)
    (src / "_background_noise_").mkdir()
    sf.write(src / "_background_noise_" / "white_noise.wav", np.random.default_rng(0).standard_normal(32000) * 0.1, 16000)
    (src / "testing_list.txt").write_text("yes/abcd0_nohash_0.wav\n")
    (src / "validation_list.txt").write_text("no/abcd1_nohash_0.wav\n")
    arc = tmp_path / "speech_commands_test.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        for f in sorted(src.rglob("*")):
            tar.add(f, arcname=str(f.relative_to(src)), recursive=False)
    return arc


def test_fetch_unpacks_verifies_and_is_idempotent(tmp_path):
    arc = make_archive(tmp_path)
    root = tmp_path / "sc"
    p = kws("fetch", "speech-commands", "--root", root, "--url", arc.as_uri(), "--sha256", sha256_of(arc))
    assert "ready (6 clips)" in p.stdout
    assert (root / "yes" / "abcd0_nohash_0.wav").is_file() and (root / "testing_list.txt").is_file()
    assert not (root / ".download").exists()
    assert "nothing to do" in kws("fetch", "speech-commands", "--root", root, "--url", arc.as_uri()).stdout


def test_fetch_rejects_bad_checksum_and_bad_archive(tmp_path):
    arc = make_archive(tmp_path)
    p = kws("fetch", "speech-commands", "--root", tmp_path / "a", "--url", arc.as_uri(), "--sha256", "0" * 64, check=False)
    assert p.returncode == 2 and "SHA-256 mismatch" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar file at all")
    p = kws("fetch", "speech-commands", "--root", tmp_path / "b", "--url", bad.as_uri(), check=False)
    assert p.returncode == 2 and "not a valid .tar.gz" in p.stderr
    assert not (tmp_path / "b" / ".complete").exists()
    p = kws("fetch", "speech-commands", "--root", tmp_path / "c", "--url", (tmp_path / "missing.tgz").as_uri(), check=False)
    assert p.returncode == 2 and "cannot download" in p.stderr
