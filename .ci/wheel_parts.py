"""Fetch only some files of pip wheels (CI: the CUDA headers and .so files).

    python wheel_parts.py DEST REQUIREMENT:GLOB[,GLOB...] ...

pip resolves each requirement (no dependencies) to a wheel URL; the wheel, a
zip file, is then read with HTTP range requests: its central directory, then
only the members whose path matches a glob, written under DEST as pip would
install them (DEST/nvidia/...). The cuBLAS wheel is 444 MB for six headers the
build needs; this way CI downloads the headers and the libraries it links,
nothing else. Prints the bytes fetched per wheel. Fetched files are kept in
DEST: a second run with the same arguments resolves and fetches nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import io
import json
import os
import pathlib
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile

BLOCK = 1 << 20


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file through HTTP range requests
    on one kept-alive connection, in 1 MiB blocks (zipfile reads in small pieces)."""

    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        cafile = os.environ.get("PIP_CERT") or None
        self._conn = http.client.HTTPSConnection(
            u.netloc, timeout=120, context=ssl.create_default_context(cafile=cafile))
        self._path = u.path + (f"?{u.query}" if u.query else "")
        self._blocks: dict[int, bytes] = {}
        self.fetched = 0
        self.size = int(self._request("HEAD", None).getheader("Content-Length"))
        self._pos = 0

    def _request(self, method, rng):
        headers = {"Range": f"bytes={rng[0]}-{rng[1]}"} if rng else {}
        for attempt in range(3):
            try:
                self._conn.request(method, self._path, headers=headers)
                r = self._conn.getresponse()
                if method == "HEAD":
                    r.read()
                    return r
                if r.status != 206:
                    raise OSError(f"range request answered {r.status}")
                return r.read()
            except (http.client.HTTPException, ConnectionError, TimeoutError):
                self._conn.close()
                if attempt == 2:
                    raise

    def _block(self, k: int) -> bytes:
        if k not in self._blocks:
            lo, hi = k * BLOCK, min(self.size, (k + 1) * BLOCK) - 1
            self._blocks[k] = self._request("GET", (lo, hi))
            self.fetched += hi - lo + 1
        return self._blocks[k]

    def read_range(self, lo: int, n: int) -> bytes:
        """Large reads (a library) go out as one request, not cached."""
        if n > 4 * BLOCK:
            data = self._request("GET", (lo, lo + n - 1))
            self.fetched += len(data)
            return data
        out = bytearray()
        while n > 0 and lo < self.size:
            b = self._block(lo // BLOCK)
            piece = b[lo % BLOCK: lo % BLOCK + n]
            out += piece
            lo += len(piece)
            n -= len(piece)
        return bytes(out)

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, off, whence=0):
        self._pos = {0: off, 1: self._pos + off, 2: self.size + off}[whence]
        return self._pos

    def read(self, n=-1):
        n = self.size - self._pos if n is None or n < 0 else min(n, self.size - self._pos)
        data = self.read_range(self._pos, n)
        self._pos += len(data)
        return data

    def readinto(self, b):
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_urls(requirements: list[str]) -> dict[str, str]:
    """requirement -> wheel URL, from one pip resolution (no dependencies;
    PyPI's metadata files spare pip the download)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
             "--only-binary=:all:", "-q", "--report", str(report), *requirements],
            check=True)
        urls = {_canonical(item["metadata"]["name"]): item["download_info"]["url"]
                for item in json.loads(report.read_text())["install"]}
    return {r: urls[_canonical(re.match(r"[A-Za-z0-9._-]+", r).group())] for r in requirements}


def fetch(dest: pathlib.Path, url: str, globs: list[str]) -> list[str]:
    name = url.rsplit("/", 1)[1]
    f = RangeFile(url)
    z = zipfile.ZipFile(f)
    wanted = [i for i in z.infolist() if any(fnmatch.fnmatch(i.filename, g) for g in globs)]
    if not wanted:
        raise SystemExit(f"{name}: no member matches {globs}")
    for info in wanted:
        target = dest / info.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(z.read(info))
    print(f"{name}: {len(wanted)} files, fetched {f.fetched / 1e6:.1f} MB of {f.size / 1e6:.1f} MB")
    return [name] + [i.filename for i in wanted]


def main(argv: list[str]) -> None:
    """A requirement fetched once (a stamp in DEST/.fetched names the wheel and
    its files) is not resolved again: delete DEST to take newer wheels."""
    dest = pathlib.Path(argv[0])
    todo = {}
    for spec in argv[1:]:
        requirement, _, globs = spec.partition(":")
        stamp = dest / ".fetched" / hashlib.sha1(spec.encode()).hexdigest()[:16]
        if stamp.exists():
            print(f"{requirement}: {stamp.read_text().splitlines()[0]}, fetched before")
        else:
            todo[requirement] = (globs.split(","), stamp)
    if not todo:
        return
    for requirement, url in wheel_urls(list(todo)).items():
        globs, stamp = todo[requirement]
        files = fetch(dest, url, globs)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text("\n".join(files) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
