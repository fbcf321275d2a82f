"""Glyph images: an offline Omniglot stand-in rendered from the fonts that ship with matplotlib.

Each *class* is one letter (a Unicode code point); each *instance* is that letter rendered in one
of matplotlib's DejaVu font variants (Sans/Serif/Mono x regular/bold/oblique/bold-oblique) with a
small random affine jitter.  Letters are grouped by *script* (Latin, Greek, Cyrillic, Armenian,
Georgian), which play the role of Omniglot's alphabets; font variants play the role of drawers.
Scripts that only DejaVu Sans covers (Canadian syllabics, Lisu, Lao, Hebrew) form a separate
**out-of-distribution** bank.

Construction (deterministic for a given matplotlib font set and seed):

1. candidate classes: code points of category Lu/Ll/Lo with no Unicode decomposition (base
   letters, no accented variants), present in every font variant used for the bank;
2. every instance is rendered at a fixed point size (relative sizes are kept: "o" is smaller than
   "O"), centred in a 28x28 canvas, then warped by a random affine map (rotation, scale, shear,
   shift) drawn from a seeded generator;
3. cross-script and in-script look-alikes are removed: a class is dropped when its mean image
   correlates above ``dedup_threshold`` with an earlier kept class (Latin "A", Greek "Alpha",
   Cyrillic "A" collapse to one class).

The bank is built at first use (a few seconds) and cached as a compressed ``.npz`` under
``$TUTOR_CACHE`` (default ``~/.cache/tutor``); :func:`bank_checksum` is pinned by a test.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GlyphBank", "load_glyphs", "build_glyphs", "bank_checksum", "cache_dir",
           "ID_SCRIPTS", "OOD_SCRIPTS"]

ID_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "GEORGIAN")
OOD_SCRIPTS = ("CANADIAN", "LISU", "LAO", "HEBREW")
_ALL_VARIANTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
)
_SANS_VARIANTS = _ALL_VARIANTS[:4]
_BUILD_VERSION = 1  # bump when the construction changes (invalidates caches)


@dataclass
class GlyphBank:
    """A bank of glyph classes.

    Attributes:
        images: ``(classes, instances, 1, size, size)`` float32 tensor in [0, 1] (ink = 1).
        chars: the character of each class.
        scripts: the script name of each class (e.g. ``"GREEK"``).
    """

    images: torch.Tensor
    chars: list[str]
    scripts: list[str]

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    @property
    def num_instances(self) -> int:
        return self.images.shape[1]

    def classes_of(self, *scripts: str) -> list[int]:
        """Indices of the classes that belong to the given scripts."""
        unknown = set(scripts) - set(self.scripts)
        if unknown:
            raise ValueError(f"unknown scripts {sorted(unknown)}; this bank has "
                             f"{sorted(set(self.scripts))}")
        return [i for i, s in enumerate(self.scripts) if s in scripts]

    def split(self, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, list[int]]:
        """A seeded class split ``{"train", "val", "test"}``, stratified by script, disjoint."""
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
            raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
        rng = np.random.default_rng(seed)
        out = {"train": [], "val": [], "test": []}
        for script in sorted(set(self.scripts)):
            idx = np.array(self.classes_of(script))
            rng.shuffle(idx)
            n_train = int(round(fractions[0] * len(idx)))
            n_val = int(round(fractions[1] * len(idx)))
            out["train"] += idx[:n_train].tolist()
            out["val"] += idx[n_train:n_train + n_val].tolist()
            out["test"] += idx[n_train + n_val:].tolist()
        return {k: sorted(v) for k, v in out.items()}

    def downsample(self, size: int) -> GlyphBank:
        """The same bank at ``size x size`` pixels (area averaging), e.g. 14 for fast MLP learners."""
        from tutor.validation import as_int

        size = as_int(size, "size", 1)
        c, n = self.images.shape[:2]
        small = F.interpolate(self.images.flatten(0, 1), size=(size, size), mode="area")
        return GlyphBank(small.view(c, n, 1, size, size), self.chars, self.scripts)


def cache_dir() -> Path:
    """Where built banks are cached: ``$TUTOR_CACHE`` or ``~/.cache/tutor`` (also when it is set but empty)."""
    value = os.environ.get("TUTOR_CACHE", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "tutor"


def _font_paths(names) -> list[str]:
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = [root / n for n in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"matplotlib's bundled fonts are missing: {missing}")
    return [str(p) for p in paths]


def _candidate_chars(fonts, scripts) -> dict[str, list[str]]:
    """Base letters (Lu/Ll/Lo, no decomposition) of ``scripts`` present in every font."""
    common = None
    for font in fonts:
        codes = set(font.get_charmap())
        common = codes if common is None else common & codes
    by_script: dict[str, list[str]] = {s: [] for s in scripts}
    for code in sorted(common):
        ch = chr(code)
        if unicodedata.category(ch) not in ("Lu", "Ll", "Lo") or unicodedata.decomposition(ch):
            continue
        script = unicodedata.name(ch, "?").split(" ")[0]
        if script in by_script:
            by_script[script].append(ch)
    return by_script


def _render(font, ch: str, size: int, point_size: float) -> np.ndarray:
    """Render ``ch`` centred in a ``size x size`` float canvas in [0, 1]."""
    font.set_size(point_size, 72)
    font.set_text(ch)
    font.draw_glyphs_to_bitmap(antialiased=True)
    ink = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    canvas = np.zeros((size, size), np.float32)
    if ink.size == 0 or ink.max() == 0:
        return canvas
    rows, cols = np.nonzero(ink > 0)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = ink.shape
    limit = size - 4
    if max(h, w) > limit:  # a rare oversized glyph: shrink it to fit, keep its aspect ratio
        scale = limit / max(h, w)
        t = torch.from_numpy(ink)[None, None]
        ink = F.interpolate(t, size=(max(1, round(h * scale)), max(1, round(w * scale))),
                            mode="area")[0, 0].numpy()
        h, w = ink.shape
    top, left = (size - h) // 2, (size - w) // 2
    canvas[top:top + h, left:left + w] = ink
    return canvas


def _jitter(images: torch.Tensor, gen: torch.Generator, strength: float) -> torch.Tensor:
    """Random affine warp of ``(n, 1, H, W)`` images: rotation, scale, shear, shift."""
    n, _, h, _ = images.shape
    u = lambda: torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1  # noqa: E731
    angle = u() * 0.17 * strength           # up to ~10 degrees
    scale = 1 + u() * 0.10 * strength
    shear = u() * 0.10 * strength
    shift = torch.stack([u(), u()], 1) * (2.0 / h) * 2 * strength   # up to 2 pixels
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (-sin + shear) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = cos / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.double(), grid, align_corners=False, padding_mode="zeros").float()


def _dedup(means: np.ndarray, threshold: float) -> list[int]:
    """Greedy removal of look-alikes: keep a class unless it correlates > threshold with a kept one."""
    flat = means.reshape(len(means), -1).astype(np.float64)
    flat = flat - flat.mean(1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True) + 1e-12
    kept: list[int] = []
    for i in range(len(flat)):
        if not kept or (flat[kept] @ flat[i]).max() <= threshold:
            kept.append(i)
    return kept


def build_glyphs(kind: str = "id", instances: int = 20, size: int = 28, seed: int = 0,
                 point_size: float = 17.0, jitter: float = 1.0,
                 dedup_threshold: float = 0.95) -> GlyphBank:
    """Render a glyph bank from scratch (no cache).  ``kind`` is ``"id"`` or ``"ood"``.

    ID classes come from :data:`ID_SCRIPTS` in all 12 DejaVu variants; OOD classes from
    :data:`OOD_SCRIPTS`, which only the 4 DejaVu Sans variants cover.
    """
    from matplotlib.ft2font import FT2Font

    if kind not in ("id", "ood"):
        raise ValueError(f"kind must be 'id' or 'ood', got {kind!r}")
    if instances < 1 or size < 8:
        raise ValueError(f"need instances >= 1 and size >= 8, got instances={instances}, size={size}")
    names, scripts = (_ALL_VARIANTS, ID_SCRIPTS) if kind == "id" else (_SANS_VARIANTS, OOD_SCRIPTS)
    fonts = [FT2Font(p) for p in _font_paths(names)]
    by_script = _candidate_chars(fonts, scripts)
    chars = [c for s in scripts for c in by_script[s]]
    char_scripts = [s for s in scripts for _ in by_script[s]]
    gen = torch.Generator().manual_seed(seed)
    clean = np.stack([
        np.stack([_render(fonts[j % len(fonts)], ch, size, point_size) for j in range(instances)])
        for ch in chars])                                     # (classes, instances, H, W)
    clean = torch.from_numpy(clean)[:, :, None]               # (classes, instances, 1, H, W)
    warped = _jitter(clean.flatten(0, 1), gen, jitter).view_as(clean).clamp(0, 1)
    # quantise to 8 bits so the bank (and its checksum) is exactly what the cache stores
    images = (warped * 255).round().to(torch.uint8)
    kept = _dedup(clean[:, 0].numpy(), dedup_threshold)  # DejaVu Sans, unjittered
    images = images[kept]
    return GlyphBank(images.float() / 255.0, [chars[i] for i in kept], [char_scripts[i] for i in kept])


def bank_checksum(bank: GlyphBank) -> str:
    """SHA-256 of the 8-bit images and the class characters (what a test pins)."""
    h = hashlib.sha256()
    h.update((bank.images * 255).round().to(torch.uint8).numpy().tobytes())
    h.update("".join(bank.chars).encode("utf-8"))
    return h.hexdigest()


def load_glyphs(kind: str = "id", size: int = 28, seed: int = 0, rebuild: bool = False) -> GlyphBank:
    """The glyph bank, built on first use and cached (``kind`` ``"id"`` or ``"ood"``).

    ``size`` other than 28 is derived from the 28x28 bank by area averaging (e.g. 14 for MLPs).
    """
    import matplotlib

    path = cache_dir() / f"glyphs-{kind}-v{_BUILD_VERSION}-seed{seed}-mpl{matplotlib.__version__}.npz"
    bank = None
    if path.exists() and not rebuild:
        try:
            with np.load(path, allow_pickle=False) as z:
                images, chars, scripts = z["images"], [str(c) for c in z["chars"]], [str(s) for s in z["scripts"]]
            ok = (images.dtype == np.uint8 and images.ndim == 5 and images.shape[2:] == (1, 28, 28)
                  and images.shape[0] == len(chars) == len(scripts) and images.shape[1] > 0)
            bank = GlyphBank(torch.from_numpy(images).float() / 255.0, chars, scripts) if ok else None
        except Exception:       # truncated, corrupt (EOFError, BadZipFile, zlib.error, ...) or foreign file
            bank = None         # rebuilt below (the cache is ours to replace; nothing else is touched)
    if bank is None:
        bank = build_glyphs(kind, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, images=(bank.images * 255).round().to(torch.uint8).numpy(),
                            chars=np.array(bank.chars), scripts=np.array(bank.scripts))
        os.replace(tmp, path)
    return bank if size == 28 else bank.downsample(size)


def main() -> None:
    """``python -m tutor.data.glyphs``: rebuild both banks and print their sizes and checksums."""
    import matplotlib

    print(f"matplotlib {matplotlib.__version__}")
    for kind in ("id", "ood"):
        bank = load_glyphs(kind, rebuild=True)
        print(f"{kind:3s}: {bank.num_classes} classes x {bank.num_instances} instances, "
              f"scripts {sorted(set(bank.scripts))}, sha256 {bank_checksum(bank)}")


if __name__ == "__main__":
    main()
