"""Real multilingual strings from the CLDR locale data that ships inside ``babel`` (offline).

For every locale CLDR lists the names, *in that language*, of some 295 territories, 400-660
languages, 170-300 currencies and 30-200 scripts.  Two things are built from them:

* an **entity-typing task** per language -- "which kind of name is this string?" (territory,
  language, currency, or script) -- with class-balanced, disjoint train / validation / test splits
  (:func:`build_typing_tasks`);
* a **pretraining corpus** of the other names of many locales, with a held-out part that is never
  trained on (:func:`pretraining_corpus`), for masked-character pretraining and for measuring
  forgetting.

Strings are NFC-normalised; a name that appears under two categories of one locale (English
"Arabic" is a language and a script) is dropped from both, so every label is unambiguous.
:func:`encode` maps strings to character ids after NFD normalisation, which splits Hangul syllables
into their jamo and accented letters into base + combining mark (a small character vocabulary for
every script).  Data: Unicode CLDR (Unicode licence), as packaged by babel (BSD licence).
"""

from __future__ import annotations

import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass

import torch

__all__ = ["CATEGORIES", "TYDI_LANGUAGES", "locale_names", "TypingSplit", "TypingTask", "build_typing_tasks",
           "pretraining_corpus", "CharVocab", "build_vocab", "encode"]

CATEGORIES = ("territories", "languages", "currencies", "scripts")
TYDI_LANGUAGES = ("ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te")   # the 9 TyDi-QA GoldP languages


def _names_list(value, name: str, example: str) -> list[str]:
    """A list of strings; a bare string (which would be read one character at a time) is refused."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a list of strings, got the single string {value!r}; write [{value!r}] "
                        f"(e.g. {example})")
    try:
        out = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}") from None
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{name} must hold strings only, got {bad[0]!r} ({type(bad[0]).__name__})")
    return out


def _babel_version() -> str:
    import babel
    return babel.__version__


def locale_names(locale: str, categories=CATEGORIES) -> dict[str, list[str]]:
    """The unambiguous names of every category in ``locale``'s own language, sorted.

    Raises ``ValueError`` naming the locale (or category) when babel's CLDR data has no such thing.
    """
    from babel import Locale, UnknownLocaleError

    categories = _names_list(categories, "categories", "categories=['territories', 'languages']")
    for c in categories:
        if c not in CATEGORIES:
            raise ValueError(f"unknown category {c!r}; allowed are {CATEGORIES}")
    try:
        loc = Locale.parse(locale)
    except (UnknownLocaleError, ValueError, TypeError) as e:
        raise ValueError(f"locale {locale!r} is not in babel's CLDR data (babel {_babel_version()}): {e}") from None
    raw = {c: {unicodedata.normalize("NFC", s).strip() for s in getattr(loc, c).values() if s and s.strip()}
           for c in CATEGORIES}                      # ambiguity is judged over all four categories
    seen = Counter(s for c in CATEGORIES for s in raw[c])
    return {c: sorted(s for s in raw[c] if seen[s] == 1) for c in categories}


def _permutation(n: int, seed: int, *keys: str) -> list[int]:
    """A permutation of range(n) fixed by ``seed`` and the keys (independent of call order)."""
    mix = zlib.crc32("/".join(keys).encode()) + 1_000_003 * seed
    return torch.randperm(n, generator=torch.Generator().manual_seed(mix)).tolist()


@dataclass
class TypingSplit:
    """Strings and their category labels (indices into ``TypingTask.categories``)."""

    strings: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.strings)


@dataclass
class TypingTask:
    """One language's entity-typing task: disjoint, class-balanced train / val / test splits."""

    language: str
    categories: tuple
    train: TypingSplit
    val: TypingSplit
    test: TypingSplit

    def all_strings(self) -> set[str]:
        return set(self.train.strings) | set(self.val.strings) | set(self.test.strings)


def build_typing_tasks(languages, categories=("territories", "languages", "currencies"), n_train: int = 32,
                       n_val: int = 16, n_test: int = 48, seed: int = 0) -> dict[str, TypingTask]:
    """Entity typing per language with exactly ``n_train`` / ``n_val`` / ``n_test`` names per category.

    The names of each (language, category) are shuffled by a permutation fixed by ``seed`` and taken
    in that order: test first, then validation, then train, so no string is in two splits and the
    test set does not depend on ``n_train``.  ``n_train = 0`` gives evaluation-only (zero-shot)
    tasks.  Raises ``ValueError`` naming the language and category when there are too few names.
    """
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an integer, got {v!r}")
    if min(n_train, n_val, n_test) < 0 or n_test == 0:
        raise ValueError(f"need n_test >= 1 and n_train, n_val >= 0, got {n_train}, {n_val}, {n_test}")
    languages = _names_list(languages, "languages", "languages=['en', 'fi']")
    if not languages:
        raise ValueError("build_typing_tasks needs at least one language")
    if len(set(languages)) != len(languages):
        raise ValueError(f"languages must be distinct, got {languages}")
    categories = tuple(_names_list(categories, "categories", "categories=['territories', 'languages']"))
    for c in categories:
        if c not in CATEGORIES:
            raise ValueError(f"unknown category {c!r}; allowed are {CATEGORIES}")
    if len(set(categories)) != len(categories):      # a duplicate would give every name of it two labels
        raise ValueError(f"categories must be distinct (each is one label), got {list(categories)}")
    if len(categories) < 2:
        raise ValueError(f"entity typing needs at least 2 categories, got {categories}")
    need = n_train + n_val + n_test
    tasks = {}
    for lang in languages:
        names = locale_names(lang, categories)
        splits = {"train": ([], []), "val": ([], []), "test": ([], [])}
        for label, cat in enumerate(categories):
            pool = names[cat]
            if len(pool) < need:
                raise ValueError(f"locale {lang!r} has {len(pool)} unambiguous {cat} names, fewer than the "
                                 f"{need} needed (n_train + n_val + n_test); lower them or drop the category")
            order = [pool[i] for i in _permutation(len(pool), seed, lang, cat)]
            for name, (lo, hi) in (("test", (0, n_test)), ("val", (n_test, n_test + n_val)),
                                   ("train", (n_test + n_val, need))):
                splits[name][0].extend(order[lo:hi])
                splits[name][1].extend([label] * (hi - lo))
        tasks[lang] = TypingTask(lang, categories, *(TypingSplit(*splits[s]) for s in ("train", "val", "test")))
    return tasks


def pretraining_corpus(locales, exclude: set[str] | None = None, heldout_fraction: float = 0.1,
                       seed: int = 0) -> tuple[list[str], list[str]]:
    """Unlabelled names of all four categories in ``locales``: ``(train, heldout)``.

    Strings in ``exclude`` (e.g. every typing validation and test name) are left out of both; of the
    rest, a fraction ``heldout_fraction`` of every (locale, category) is held out (never trained on,
    used to measure forgetting).  Deterministic for a seed.
    """
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    exclude = exclude or set()
    train, held = [], []
    for loc in _names_list(locales, "locales", "locales=['en', 'fi']"):
        names = locale_names(loc)
        for cat in CATEGORIES:
            pool = [s for s in names[cat] if s not in exclude]
            order = [pool[i] for i in _permutation(len(pool), seed, "pretrain", loc, cat)]
            cut = round(heldout_fraction * len(order))
            held += order[:cut]
            train += order[cut:]
    return train, held


@dataclass
class CharVocab:
    """Character ids: 0 = padding, 1 = mask, 2 = unknown, then the characters."""

    chars: list[str]

    PAD, MASK, UNK = 0, 1, 2

    def __post_init__(self):
        self.index = {c: i + 3 for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars) + 3


def build_vocab(strings, min_count: int = 3) -> CharVocab:
    """The characters (after NFD) that occur at least ``min_count`` times, most frequent first."""
    strings = _names_list(strings, "strings", "build_vocab(['Kenya', 'Suomi'])")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    counts = Counter(c for s in strings for c in unicodedata.normalize("NFD", s))
    return CharVocab(sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c)))


def encode(strings, vocab: CharVocab, max_len: int = 40) -> torch.Tensor:
    """Character ids ``(n, max_len)`` (NFD, truncated, right-padded with 0)."""
    strings = _names_list(strings, "strings", "encode(['Kenya'], vocab)")
    if not isinstance(vocab, CharVocab):
        raise TypeError(f"vocab must be a CharVocab (from build_vocab), got {type(vocab).__name__}")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be an integer >= 1, got {max_len!r}")
    out = torch.zeros(len(strings), max_len, dtype=torch.long)
    for i, s in enumerate(strings):
        ids = [vocab.index.get(c, CharVocab.UNK) for c in unicodedata.normalize("NFD", s)][:max_len]
        if not ids:
            raise ValueError(f"string {i} ({s!r}) is empty")
        out[i, :len(ids)] = torch.tensor(ids)
    return out
