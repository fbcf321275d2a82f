"""Opt-in loader for the real Omniglot dataset on the user's disk.

Nothing here runs unless called.  :func:`load_omniglot` reads the standard folder layout of the
official release (Lake et al., 2015)::

    root/images_background/<Alphabet>/character01/0101_01.png   (105x105, black ink on white)
    root/images_evaluation/<Alphabet>/...

and returns a :class:`~tutor.data.glyphs.GlyphBank` (ink = 1, resized to ``size``), so every
sampler and notebook that uses glyphs works with Omniglot unchanged (alphabets play the role of
scripts).  :func:`download_omniglot` fetches the two official zip files **only when called**,
verifies their MD5 checksums and unpacks them.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tutor.data.glyphs import GlyphBank

__all__ = ["load_omniglot", "download_omniglot", "OMNIGLOT_ZIPS"]

OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
# name -> MD5 of the official zip
OMNIGLOT_ZIPS = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_omniglot(root, url: str = OMNIGLOT_URL, checksums: dict | None = None) -> Path:
    """Download, verify and unpack Omniglot into ``root`` (explicit opt-in; needs network).

    ``checksums`` maps zip names to MD5 sums (default: the official ones).  A mismatch raises
    ``ValueError`` and the bad file is deleted.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for name, md5 in (checksums or OMNIGLOT_ZIPS).items():
        if (root / name).is_dir():
            continue
        archive = root / f"{name}.zip"
        if not archive.exists():
            with urllib.request.urlopen(url + f"{name}.zip") as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f)
        got = _md5(archive)
        if got != md5:
            archive.unlink()
            raise ValueError(f"checksum mismatch for {archive.name}: expected MD5 {md5}, got {got}; "
                             "the file was removed, try again")
        with zipfile.ZipFile(archive) as z:
            z.extractall(root)
    return root


def load_omniglot(root, split: str = "background", size: int = 28) -> GlyphBank:
    """Load Omniglot from ``root`` as a glyph bank ``(characters, 20, 1, size, size)``.

    ``split`` is ``"background"`` (964 characters, 30 alphabets) or ``"evaluation"`` (659, 20).
    Raises ``FileNotFoundError`` with the expected layout if the folder is missing.
    """
    from PIL import Image

    if split not in ("background", "evaluation"):
        raise ValueError(f"split must be 'background' or 'evaluation', got {split!r}")
    folder = Path(root).expanduser() / f"images_{split}"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Omniglot folder {folder} not found. Expected root/images_{split}/<Alphabet>/"
            "characterNN/*.png; call tutor.data.omniglot.download_omniglot(root) to fetch it "
            "(needs network) or point root at your copy.")
    images, chars, scripts = [], [], []
    counts = set()
    for alphabet in sorted(p for p in folder.iterdir() if p.is_dir()):
        for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            files = sorted(character.glob("*.png"))
            if not files:
                continue
            arr = np.stack([1.0 - np.asarray(Image.open(f).convert("L"), np.float32) / 255.0
                            for f in files])                       # ink = 1
            t = F.interpolate(torch.from_numpy(arr)[:, None], size=(size, size), mode="area")
            images.append(t)
            counts.add(len(files))
            chars.append(f"{alphabet.name}/{character.name}")
            scripts.append(alphabet.name)
    if not images:
        raise FileNotFoundError(f"no character folders with PNG files under {folder}")
    if len(counts) != 1:
        raise ValueError(f"characters have different numbers of drawings {sorted(counts)}; "
                         "the Omniglot layout has 20 per character")
    return GlyphBank(torch.stack(images), chars, scripts)
