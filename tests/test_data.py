"""Samplers, glyph bank, procedural tasks and the opt-in Omniglot loader."""

import zipfile

import numpy as np
import pytest
import torch

from tutor.data import (
    AnyShotSampler,
    EpisodeSampler,
    GaussianClassTasks,
    SinusoidTasks,
    fixed_episodes,
    load_glyphs,
    load_omniglot,
)
from tutor.data.glyphs import bank_checksum, build_glyphs
from tutor.data.omniglot import download_omniglot

# The bank is deterministic for a given matplotlib font set; pinned for the version we ship with.
PINNED = {"3.11.2": {
    "id": "b2e676ae1070097490ca5b564f24fb0b0699a20872ab1ae1fc882a29906c5cc1",
    "ood": "83a7b11973cd39e2a5c3adc490b5cd35ec374d13b2fd43ed9460ce1000ba2951",
}}


@pytest.fixture(scope="module")
def bank():
    return load_glyphs()


def images(classes=10, instances=6):
    return torch.arange(classes * instances, dtype=torch.float32).view(classes, instances, 1)


def test_glyph_bank_size_splits_and_ood(bank):
    assert bank.num_classes >= 500 and bank.num_instances == 20
    assert bank.images.shape[2:] == (1, 28, 28)
    assert 0 <= bank.images.min() and bank.images.max() <= 1
    split = bank.split()
    sets = [set(v) for v in split.values()]
    assert sum(map(len, sets)) == bank.num_classes
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    ood = load_glyphs("ood")
    assert not set(ood.scripts) & set(bank.scripts)
    # look-alikes removed: no two kept classes have near-identical clean renderings
    flat = bank.images[:, 0].flatten(1).double()
    flat = flat - flat.mean(1, keepdim=True)
    flat = flat / flat.norm(dim=1, keepdim=True)
    corr = flat @ flat.T - 2 * torch.eye(len(flat), dtype=torch.float64)
    assert corr.max() < 0.999


def test_glyph_bank_is_deterministic_and_pinned(bank):
    import matplotlib

    rebuilt = build_glyphs("id")
    assert bank_checksum(rebuilt) == bank_checksum(bank)
    pinned = PINNED.get(matplotlib.__version__)
    if pinned is None:
        pytest.skip(f"no pinned checksum for matplotlib {matplotlib.__version__}")
    assert bank_checksum(bank) == pinned["id"]
    assert bank_checksum(load_glyphs("ood")) == pinned["ood"]


def test_episode_counts_labels_and_disjointness():
    s = EpisodeSampler(images(), range(10), ways=4, shots=2, queries=3)
    ep = s.sample(0)
    assert ep.support_x.shape == (8, 1) and ep.query_x.shape == (12, 1)
    assert torch.equal(torch.bincount(ep.support_y), torch.full((4,), 2))
    assert torch.equal(torch.bincount(ep.query_y), torch.full((4,), 3))
    for label, c in enumerate(ep.classes.tolist()):
        sup = set(ep.support_x[ep.support_y == label].flatten().tolist())
        qry = set(ep.query_x[ep.query_y == label].flatten().tolist())
        assert not sup & qry                                       # support and query disjoint
        assert all(c * 6 <= v < (c + 1) * 6 for v in sup | qry)    # from the right class


def test_sampler_is_deterministic_and_samples_classes_per_task():
    s = EpisodeSampler(images(), range(10), ways=3, shots=1, queries=1)
    a, b = s.batch(5, 7), s.batch(5, 7)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.classes, b.classes)
    assert len({tuple(c) for c in a.classes.tolist()}) > 1       # tasks do not share classes
    assert [e.classes.tolist() for e in fixed_episodes(s, 3, 1)] == \
        [e.classes.tolist() for e in fixed_episodes(s, 3, 1)]


def test_split_pools_are_respected():
    s = EpisodeSampler(images(), [1, 3, 5, 7], ways=2, shots=1, queries=1)
    for i in range(20):
        assert set(s.sample(i).classes.tolist()) <= {1, 3, 5, 7}


def test_any_shot_ranges_and_balanced_queries():
    s = AnyShotSampler(images(10, 30), range(10), ways=5, max_shots=10, queries=4)
    eps = s.batch(200, 0)
    kinds = {"imbalanced": 0, "balanced": 0}
    for ep in eps:
        counts = torch.bincount(ep.support_y, minlength=5)
        assert counts.min() >= 1 and counts.max() <= 10
        assert torch.equal(torch.bincount(ep.query_y), torch.full((5,), 4))
        kinds["balanced" if counts.min() == counts.max() else "imbalanced"] += 1
    assert 60 < kinds["imbalanced"] < 140                      # about half the tasks


def test_donors_are_disjoint_from_targets():
    s = EpisodeSampler(images(12, 6), range(12), ways=3, shots=1, queries=1, donors=4, donor_shots=5)
    for i in range(10):
        ep = s.sample(i)
        assert ep.donor_x.shape == (4, 5, 1)
        donor_classes = {int(v) // 6 for v in ep.donor_x.flatten().tolist()}
        assert len(donor_classes) == 4 and not donor_classes & set(ep.classes.tolist())


@pytest.mark.parametrize("kwargs, message", [
    (dict(ways=11, shots=1, queries=1), "more than the 10 classes"),
    (dict(ways=2, shots=4, queries=3), "more than the 6 instances"),
    (dict(ways=-1, shots=1, queries=1), "ways must be a positive integer"),
    (dict(ways=2, shots=0, queries=1), "shots must be a positive integer"),
    (dict(ways=2, shots=1, queries=1, donors=9), "donors=9"),
    (dict(ways=2, shots=1, queries=1, donors=2, donor_shots=7), "donor_shots=7"),
])
def test_bad_settings_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(images(), range(10), **kwargs)


def test_bad_image_shape_and_class_ids():
    with pytest.raises(ValueError, match="classes, instances"):
        EpisodeSampler(torch.zeros(5, 6), range(5), 2, 1, 1)
    with pytest.raises(ValueError, match="must lie in"):
        EpisodeSampler(images(), [0, 10], 2, 1, 1)
    with pytest.raises(ValueError, match="imbalanced_fraction"):
        AnyShotSampler(images(), range(10), 2, 2, 1, imbalanced_fraction=2)


def test_sinusoid_tasks():
    ep = SinusoidTasks().sample(5, 10, gen=0)
    amp, phase = ep.params
    assert 0.1 <= amp <= 5 and 0 <= phase <= np.pi
    assert ep.support_x.shape == (5, 1) and ep.query_y.shape == (10, 1)
    assert torch.allclose(ep.support_y, amp * torch.sin(ep.support_x - phase))
    with pytest.raises(ValueError):
        SinusoidTasks(amplitude=(5, 1))


def test_gaussian_tasks_id_and_ood_signal_planes():
    for variant, plane in (("id", [0, 1]), ("ood", [2, 3])):
        ep = GaussianClassTasks(variant=variant).sample(5, 40, 5, gen=0)
        x, y = ep.support_x, ep.support_y
        centres = torch.stack([x[y == c].mean(0) for c in range(5)])
        spread = centres.std(0)                     # class means differ only in the signal plane
        assert spread[plane].min() > 1.0
        others = [i for i in range(16) if i not in plane]
        assert spread[others].max() < 0.8
    with pytest.raises(ValueError, match="dim"):
        GaussianClassTasks(dim=3)
    with pytest.raises(ValueError, match="shot counts"):
        GaussianClassTasks().sample(3, [1, 2], 1)


def _write_fixture(root, split="background", alphabets=2, characters=3, drawings=20):
    from PIL import Image

    rng = np.random.default_rng(0)
    for a in range(alphabets):
        for c in range(characters):
            d = root / f"images_{split}" / f"Alphabet_{a}" / f"character{c + 1:02d}"
            d.mkdir(parents=True)
            for k in range(drawings):
                img = (rng.random((105, 105)) > 0.1).astype(np.uint8) * 255    # white paper, black ink
                Image.fromarray(img).save(d / f"{c + 1:02d}{a:02d}_{k + 1:02d}.png")


def test_omniglot_loader_on_a_fixture_in_the_real_layout(tmp_path):
    _write_fixture(tmp_path)
    bank = load_omniglot(tmp_path, "background", size=28)
    assert bank.images.shape == (6, 20, 1, 28, 28)
    assert bank.scripts[:3] == ["Alphabet_0"] * 3 and bank.chars[0] == "Alphabet_0/character01"
    assert 0.05 < bank.images.mean() < 0.15                     # ink (~10% of pixels) is 1
    sampler = EpisodeSampler(bank.images, range(6), ways=5, shots=1, queries=5)
    assert sampler.sample(0).support_x.shape == (5, 1, 28, 28)
    with pytest.raises(FileNotFoundError, match="download_omniglot"):
        load_omniglot(tmp_path, "evaluation")


def test_omniglot_download_verifies_checksums(tmp_path):
    src = tmp_path / "src"
    _write_fixture(src, alphabets=1, characters=1, drawings=2)
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as z:
        for f in (src / "images_background").rglob("*.png"):
            z.write(f, f.relative_to(src))
    from tutor.data.omniglot import _md5

    good = _md5(tmp_path / "images_background.zip")
    dest = tmp_path / "dest"
    download_omniglot(dest, url=(tmp_path.as_uri() + "/"), checksums={"images_background": good})
    assert load_omniglot(dest, size=14).images.shape == (1, 2, 1, 14, 14)
    with pytest.raises(ValueError, match="checksum mismatch"):
        download_omniglot(tmp_path / "bad", url=(tmp_path.as_uri() + "/"),
                          checksums={"images_background": "0" * 32})
