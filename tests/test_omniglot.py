"""Omniglot archives (synthetic ones made here, and the real minimal splits when present) and
the episode sampler."""
import hashlib
import zipfile

import pytest
import torch

import metakit
from metakit import MetakitError
from metakit.data import omniglot
from metakit.data.archives import download
from metakit.tasks import FewShotClassification


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAKIT_CACHE", str(tmp_path / "cache"))


def test_synthetic_archive_decodes_to_ink_tensor(tmp_path, make_archive):
    make_archive(tmp_path / "images_background.zip", "images_background")
    data = omniglot.load_omniglot(["images_background"], root=tmp_path, image_size=20)
    assert data.images.shape == (5, 4, 20, 20) and data.images.dtype == torch.uint8
    assert data.alphabets == ["Alpha"] * 3 + ["Beta"] * 2
    assert data.characters[0] == "Alpha/character01"
    assert data.images.max() > 200 and (data.images == 0).float().mean() > 0.5  # ink is rare and high
    cached = list((tmp_path / "cache").glob("omniglot-images_background-*-20px.pt"))
    assert len(cached) == 1
    again = omniglot.load_omniglot(["images_background"], root=tmp_path, image_size=20)
    assert torch.equal(again.images, data.images)


def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, make_archive):
    make_archive(tmp_path / "images_background.zip", "images_background")
    data = omniglot.load_omniglot(["images_background"], root=tmp_path, image_size=20)
    (cached,) = (tmp_path / "cache").glob("omniglot-images_background-*-20px.pt")
    cached.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match=r"Omniglot cache .* is unreadable .*decoding the archive again"):
        again = omniglot.load_omniglot(["images_background"], root=tmp_path, image_size=20)
    assert torch.equal(again.images, data.images)
    assert torch.load(cached, weights_only=True)["images"].shape == data.images.shape  # rewritten


def test_extracted_folder_works_like_the_zip(tmp_path, make_archive):
    zipped = make_archive(tmp_path / "images_evaluation.zip", "images_evaluation")
    from_zip = omniglot.load_omniglot(["images_evaluation"], root=tmp_path, cache=False)
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(zipped) as z:
        z.extractall(folder)
    from_folder = omniglot.load_omniglot(["images_evaluation"], root=folder, cache=False)
    assert torch.equal(from_zip.images, from_folder.images)
    assert from_zip.characters == from_folder.characters


def test_checksum_mismatch_names_file_and_expected_hash(tmp_path, make_archive):
    fake = make_archive(tmp_path / "images_background_small1.zip", "images_background_small1")
    with pytest.raises(MetakitError, match=r"images_background_small1.zip is corrupt.*expected f38eb80f"):
        omniglot.load_omniglot(["images_background_small1"], root=tmp_path)
    assert fake.exists()


def test_missing_and_truncated_archives(tmp_path, make_archive):
    with pytest.raises(
        MetakitError, match=r"images_background.zip not found in .*METAKIT_DATA.*download_missing=True"
    ):
        omniglot.load_omniglot(["images_background"], root=tmp_path)
    whole = make_archive(tmp_path / "whole.zip", "images_background").read_bytes()
    (tmp_path / "images_background.zip").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(MetakitError, match="truncated or not a zip"):
        omniglot.load_omniglot(["images_background"], root=tmp_path)
    with pytest.raises(MetakitError, match="unknown Omniglot archive 'images_background_small3'"):
        omniglot.load_omniglot(["images_background_small3"], root=tmp_path)


def test_download_verifies_and_is_atomic(tmp_path, monkeypatch, make_archive):
    source = make_archive(tmp_path / "served.zip", "images_background_small1")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    got = download(source.as_uri(), tmp_path / "out" / "a.zip", digest, progress=False)
    assert got.read_bytes() == source.read_bytes()
    with pytest.raises(MetakitError, match="corrupt or not the official file"):
        download(source.as_uri(), tmp_path / "out" / "b.zip", "0" * 64, progress=False)
    assert not (tmp_path / "out" / "b.zip").exists() and not list((tmp_path / "out").glob(".b.zip*"))
    # load_omniglot fetches a missing archive from the official URL (here: the local file)
    monkeypatch.setattr(
        omniglot, "URL", str(tmp_path / "{name}.zip").replace(str(tmp_path), tmp_path.as_uri())
    )
    monkeypatch.setitem(omniglot.ARCHIVES, "images_background_small1", digest)
    (tmp_path / "images_background_small1.zip").write_bytes(source.read_bytes())
    data = omniglot.load_omniglot(
        ["images_background_small1"], root=tmp_path / "fresh", download_missing=True
    )
    # root means what METAKIT_DATA means: the archive lands in root/omniglot/
    assert len(data) == 5 and (tmp_path / "fresh" / "omniglot" / "images_background_small1.zip").is_file()


def test_real_minimal_splits(real_omniglot):
    REAL = real_omniglot
    small1 = omniglot.load_omniglot(["images_background_small1"], root=REAL, cache=False)
    small2 = omniglot.load_omniglot(["images_background_small2"], root=REAL, cache=False)
    assert small1.images.shape == (136, 20, 28, 28) and small2.images.shape == (156, 20, 28, 28)
    assert small1.images.min() == 0 and small1.images.max() == 255
    both = omniglot.load_omniglot(omniglot.MINIMAL, root=REAL, cache=False)
    # Latin (26) and Greek (24) are in both splits, file for file: kept once
    assert len(both) == 136 + 156 - 50 and len(set(both.characters)) == len(both)
    train, test = both.split_by_alphabet(["Tagalog", "Korean"])
    assert set(test.alphabets) == {"Tagalog", "Korean"} and not set(train.alphabets) & set(test.alphabets)
    rotated = both.with_rotations()
    assert len(rotated) == 4 * len(both)
    assert torch.equal(rotated.images[len(both)], torch.rot90(both.images[0], 1, dims=(-2, -1)))
    # mirror images as new classes: after the rotations, the 8 symmetries of the square, all distinct
    symmetries = rotated.with_reflections()
    assert len(symmetries) == 8 * len(both)
    assert symmetries.characters[len(rotated)] == both.characters[0] + "/mirror"
    assert torch.equal(symmetries.images[len(rotated) + 1], both.images[1].flip(-1))
    assert len({tuple(symmetries.images[k * len(both) + 5, 0].flatten().tolist()) for k in range(8)}) == 8


def test_episodes_have_distinct_classes_and_drawings_with_consistent_labels():
    classes, drawings = 12, 20
    # image (c, d) carries its class in pixel [0, 0] and its drawing in pixel [0, 1]
    images = torch.zeros(classes, drawings, 8, 8, dtype=torch.uint8)
    images[:, :, 0, 0] = torch.arange(classes).view(-1, 1) * 10
    images[:, :, 0, 1] = torch.arange(drawings).view(1, -1) * 10
    sampler = FewShotClassification(images, ways=5, shots=2, queries=3)
    batch = sampler.sample(50, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (50, 10, 1, 8, 8) and batch.query_x.shape == (50, 15, 1, 8, 8)
    assert batch.support_x.dtype == torch.float32 and batch.support_x.max() <= 1
    ids = lambda x, p: (x[:, :, 0, 0, p] * 255 / 10).round().long()
    for t in range(50):
        s_cls, q_cls = ids(batch.support_x, 0)[t], ids(batch.query_x, 0)[t]
        assert len(set(s_cls.tolist())) == 5
        for label in range(5):  # one class per label, the same in support and query
            cls = s_cls[batch.support_y[t] == label].unique()
            assert cls.numel() == 1 and torch.equal(q_cls[batch.query_y[t] == label].unique(), cls)
            drawn = torch.cat(
                [
                    ids(batch.support_x, 1)[t][batch.support_y[t] == label],
                    ids(batch.query_x, 1)[t][batch.query_y[t] == label],
                ]
            )
            assert drawn.unique().numel() == 5  # K + Q distinct drawings
    # over tasks, every class gets every label: labels are permuted per task
    first = ids(batch.support_x, 0)[:, 0]
    assert first.unique().numel() > 5
    again = sampler.sample(50, torch.Generator().manual_seed(0))
    assert torch.equal(again.support_x, batch.support_x)  # seeded


def test_episode_errors():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(MetakitError, match="5-way episodes need at least 5 classes; the data has 4"):
        FewShotClassification(images, ways=5)
    with pytest.raises(MetakitError, match="shots \\+ queries = 4 exceeds the 3 drawings"):
        FewShotClassification(images, ways=2, shots=2, queries=2)
    with pytest.raises(MetakitError, match=r"images must be a tensor \[classes, drawings, H, W\]"):
        FewShotClassification(torch.zeros(4, 8, 8))
    assert isinstance(metakit.tasks.FewShotClassification(images, 2).sample(1), metakit.TaskBatch)
