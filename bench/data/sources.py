"""A user's download, as a folder or a zip file, seen as a set of relative paths.

``prepare`` never trusts the layout blindly: it looks for the manifest's paths under the given root
or under one folder level below it (``LOLdataset/our485/...``), and reads zip members in place.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import BenchError
from ..fsutil import atomic_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


class Source:
    """Files under ``base`` in a folder or a zip archive, addressed by POSIX relative paths."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.exists():
            raise BenchError(f"--root {self.root} does not exist")
        self.zip = zipfile.ZipFile(self.root) if zipfile.is_zipfile(self.root) else None
        if self.zip is None and not self.root.is_dir():
            raise BenchError(f"--root {self.root} is neither a folder nor a zip file")
        self.base = ""
        if self.zip is not None:
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
            self._members = {n: n for n in names}
        else:
            self._members = None

    def all_files(self) -> list[str]:
        """Every file, as a path relative to the root (not to ``base``)."""
        if self.zip is not None:
            return list(self._members)
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]

    def locate(self, probe: list[str]) -> None:
        """Choose ``base`` (root, or one folder below it) as the place where most probe paths exist."""
        candidates = [""]
        if self.zip is not None:
            candidates += sorted({n.split("/")[0] + "/" for n in self._members if "/" in n})
        else:
            candidates += sorted(p.name + "/" for p in self.root.iterdir() if p.is_dir())
        best = max(candidates, key=lambda c: sum(self._exists(c + r) for r in probe))
        self.base = best

    def _exists(self, full: str) -> bool:
        if self.zip is not None:
            return full in self._members
        return (self.root / full).is_file()

    def exists(self, rel: str) -> bool:
        return self._exists(self.base + rel)

    def describe(self, rel: str) -> str:
        return str(PurePosixPath(self.root.as_posix()) / (self.base + rel))

    def sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.open(rel) as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()

    def open(self, rel: str):
        if self.zip is not None:
            return self.zip.open(self.base + rel)
        return open(self.root / (self.base + rel), "rb")

    def copy_to(self, rel: str, dest: Path) -> None:
        with self.open(rel) as src, atomic_path(dest, "the dataset file") as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)


def is_image(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower() in IMAGE_SUFFIXES
