"""`kws fetch speech-commands`: download and unpack the official Speech Commands archive.

* The archive is downloaded to ``ROOT/.download/<name>.part``; an interrupted download resumes
  with an HTTP Range request (or restarts cleanly when the server ignores it).
* The size is checked against the server's Content-Length, and the SHA-256 against ``--sha256``
  when given; a mismatch deletes the partial file and says so.
* Unpacking goes to a temporary folder renamed into place, then ``ROOT/.complete`` is written, so a
  second run does nothing and a killed run never leaves a half-unpacked dataset that looks whole.

Any URL urllib understands works (``file://`` is used by the tests: these machines have no internet).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import FetchError

URLS = {
    1: "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
    2: "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
}


def _download(url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:                       # already complete
            return
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"{url}: cannot download ({getattr(e, 'reason', e)})") from None
    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        resumed = have and status == 206
        if have and not resumed:
            have = 0                                     # server ignored Range (or file://): restart
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                             desc=f"download {Path(url).name}") as bar:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise FetchError(f"{url}: download incomplete ({part.stat().st_size} of {total} bytes); run again to resume")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def fetch_speech_commands(version: int, root: Path, url: str | None = None, sha256: str | None = None,
                          log=print) -> Path:
    root = Path(root)
    if (root / ".complete").is_file():
        log(f"{root}: Speech Commands v{version} already unpacked, nothing to do")
        return root
    url = url or URLS[version]
    dl = root / ".download"
    dl.mkdir(parents=True, exist_ok=True)
    part = dl / (Path(url).name + ".part")
    _download(url, part)
    if sha256 and sha256_of(part).lower() != sha256.lower():
        part.unlink()
        raise FetchError(f"{url}: SHA-256 mismatch (the partial file was deleted; run again to restart)")
    tmp = root.with_name(root.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(part) as tar:
            members = tar.getmembers()
            for m in tqdm(members, desc="unpack", unit="file"):
                tar.extract(m, tmp, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        part.unlink(missing_ok=True)
        raise FetchError(f"{url}: not a valid .tar.gz archive ({e}); the download was deleted, run again") from None
    for item in tmp.iterdir():
        dest = root / item.name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(item, dest)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(dl, ignore_errors=True)
    (root / ".complete").write_text(url + "\n")
    n = sum(1 for f in root.glob("*/*.wav") if not f.parent.name.startswith("_"))
    log(f"{root}: Speech Commands v{version} ready ({n} clips)")
    return root
