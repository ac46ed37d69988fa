import gzip
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dissipate import data as data_module
from dissipate.data import (DatasetNotFoundError, DeadLeaves, data_dir, load_data, loader_batches, read_image,
                            synthetic_source)
from dissipate.errors import InvalidArgumentError


def test_synthetic_images_are_deterministic_and_independent_of_the_set_size():
    short, long = load_data("synthetic", length=4), load_data("synthetic", length=100)
    image, label = short.dataset[3]
    assert torch.equal(image, long.dataset[3][0]) and label == long.dataset[3][1]
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1 and 0 <= label < 10
    assert not torch.equal(image, load_data("synthetic", length=4, seed=1).dataset[3][0])
    assert not torch.equal(image, short.dataset[2][0])
    train = load_data("synthetic", length=4, train=True).dataset
    assert not any(torch.equal(short.dataset[i][0], train[j][0]) for i in range(4) for j in range(4))


def test_synthetic_size_channels_and_statistics():
    grey = load_data("synthetic", image_size=48, in_chans=1, length=64)
    images = torch.stack([grey.dataset[i][0] for i in range(64)])
    assert images.shape == (64, 1, 48, 48) and (grey.in_chans, grey.image_size) == (1, 48)
    assert 0.3 < images.mean() < 0.7 and images.std() > 0.1  # not blank, not saturated
    with pytest.raises(IndexError):
        grey.dataset[64]


def test_dead_leaves_has_power_law_radii_and_covers_the_image():
    leaves = DeadLeaves(1, image_size=64)
    assert (leaves.spec.r_min, leaves.spec.r_max) == (2.0, 32.0)
    image = leaves[0][0]
    assert torch.unique(image.reshape(3, -1), dim=1).shape[1] > 20  # many discs, not one colour
    radius = leaves.spec.discs(torch.arange(64), 0)[0]
    # p(r) ~ r^-3 on [2, 32]: P(r > 4) = (4^-2 - 32^-2) / (2^-2 - 32^-2) = 0.247
    assert (radius > 4).double().mean().item() == pytest.approx(0.247, abs=0.01)
    assert radius.min() >= 2 and radius.max() <= 32


@pytest.mark.parametrize("size, count", [(5, 4), (28, 4), (32, 4), (33, 300)])  # 300 at 33 px: two blocks
def test_dead_leaves_paint_each_pixel_with_the_last_disc_over_it(size, count):
    """The batched renderer (a bounding-box patch per disc, the maximum disc index per pixel) against the definition
    tested on every pixel and every disc."""
    spec = DeadLeaves(count, image_size=size).spec
    radius, centre_y, centre_x, _, _ = spec.discs(torch.arange(count), 0)
    centres = torch.arange(size, dtype=radius.dtype) + 0.5
    covered = ((centres[None, None, :, None] - centre_y[:, :, None, None]) ** 2
               + (centres[None, None, None, :] - centre_x[:, :, None, None]) ** 2) < radius[:, :, None, None] ** 2
    order = torch.arange(spec.num_discs)[None, :, None, None]
    expected = torch.where(covered, order, -1).amax(1)  # (B, H, W)
    assert torch.equal(spec.last_cover(radius, centre_y, centre_x), expected)
    assert (expected >= 0).double().mean() > 0.9  # the discs cover the image, all but ~e^-4 of it


def test_synthetic_images_do_not_depend_on_the_batch_or_its_order():
    leaves = DeadLeaves(200, image_size=16)
    images, labels = leaves.draw(range(200))
    in_sevens = [leaves.draw(range(start, min(start + 7, 200))) for start in range(0, 200, 7)]
    assert torch.equal(torch.cat([b[0] for b in in_sevens]), images)
    assert torch.equal(torch.cat([b[1] for b in in_sevens]), labels)
    backwards = torch.arange(199, -1, -1)
    assert torch.equal(leaves.draw(backwards)[0], images[backwards])
    one = leaves[130]
    assert torch.equal(one[0], images[130]) and one[1] == labels[130]
    loaded = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(leaves, [3, 150, 64]), batch_size=3)))
    assert torch.equal(loaded[0], images[[3, 150, 64]]) and torch.equal(loaded[1], labels[[3, 150, 64]])
    assert torch.bincount(labels, minlength=10).min() > 5  # every class appears
    on_meta = leaves.draw(range(20), "meta")  # a device nothing can be read back from: drawing never reads it
    assert on_meta[0].shape == (20, 3, 16, 16) and on_meta[1].shape == (20,)


def test_synthetic_source_sees_through_subsets():
    leaves = DeadLeaves(50)
    nested = torch.utils.data.Subset(torch.utils.data.Subset(leaves, list(range(10, 50))), [0, 5, 39])
    assert synthetic_source(nested) == (leaves, [10, 15, 49])
    assert synthetic_source(torch.utils.data.TensorDataset(torch.zeros(2))) == (None, [])


def write_cifar(root, folder, files, label_key, meta_file, meta_key, count=6):
    """Tiny CIFAR pickles in torchvision's on-disk layout (the real ones hold 10,000 images per file)."""
    base = root / folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name in files:
        pixels = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        arrays[name] = pixels
        with open(base / name, "wb") as f:
            pickle.dump({"data": pixels, label_key: list(range(count))}, f)
    with open(base / meta_file, "wb") as f:
        pickle.dump({meta_key: [f"class{i}" for i in range(10 if folder.startswith("cifar-10-") else 100)]}, f)
    return arrays


@pytest.fixture
def no_md5(monkeypatch):
    """The real files' md5 sums cannot match tiny ones: skip only that check, the loading code is torchvision's."""
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)


def test_cifar10_loads_through_torchvision(tmp_path, no_md5):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    arrays = write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", "batches.meta", "label_names")
    source = load_data("cifar10", root=tmp_path)
    image, label = source.dataset[2]
    expected = torch.from_numpy(arrays["test_batch"][2].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(image, expected) and label == 2
    assert (len(source.dataset), source.num_classes, source.in_chans, source.image_size) == (6, 10, 3, 32)
    assert len(load_data("cifar10", root=tmp_path, train=True).dataset) == 30


def test_cifar100_loads_through_torchvision(tmp_path, no_md5):
    write_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels", "meta", "fine_label_names")
    source = load_data("cifar100", root=tmp_path, image_size=16)
    assert source.num_classes == 100 and source.dataset[0][0].shape == (3, 16, 16)


def write_idx(path, array: np.ndarray, compress: bool = False):
    """An IDX file (the MNIST format): magic (0, 0, ubyte=0x08, ndim), big-endian dims, then the bytes."""
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def write_fashion_mnist(directory, compress: bool, count=5):
    directory.mkdir(parents=True)
    suffix = ".gz" if compress else ""
    images = np.random.default_rng(0).integers(0, 256, size=(count, 28, 28))
    for split in ("train", "t10k"):
        write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", np.arange(count) % 10, compress)
    return images


def test_fashion_mnist_loads_through_torchvision(tmp_path):
    images = write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    source = load_data("fashion-mnist", root=tmp_path)
    image, label = source.dataset[4]
    assert image.shape == (1, 28, 28) and label == 4
    assert torch.allclose(image[0], torch.from_numpy(images[4]).float() / 255)


def test_fashion_mnist_is_read_from_the_debian_package_files(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets"
    images = write_fashion_mnist(debian, compress=True)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", debian)
    source = load_data("fashion-mnist", root=tmp_path / "data", train=True)
    assert len(source.dataset) == 5
    assert torch.allclose(source.dataset[1][0][0], torch.from_numpy(images[1]).float() / 255)


@pytest.mark.parametrize("kind", ["folder", "imagenet"])
def test_image_folders(tmp_path, kind):
    root = tmp_path / "val" if kind == "imagenet" else tmp_path
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 30, 3), 60 * i, dtype=np.uint8)).save(root / cls / f"{i}.png")
    source = load_data(f"{kind}:{tmp_path}", image_size=24, train=kind == "folder")  # folder: all but the first
    assert (len(source.dataset), source.num_classes, source.image_size) == (5 if kind == "folder" else 6, 2, 24)
    assert source.dataset[4][0].shape == (3, 24, 24) and source.dataset[4][1] == 1


def test_a_plain_folder_holds_out_every_tenth_image_as_its_test_split(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(12):
            Image.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8)).save(tmp_path / cls / f"{i:02d}.png")
    test, train = (load_data(f"folder:{tmp_path}", train=split, image_size=8).dataset for split in (False, True))
    assert (len(test), len(train)) == (3, 21) and test.classes == train.classes == ["cat", "dog"]
    files = [Path(test.dataset.samples[i][0]).relative_to(tmp_path).as_posix() for i in test.indices]
    assert files == ["cat/00.png", "cat/10.png", "dog/08.png"]  # in ImageFolder's order: indices 0, 10 and 20
    assert test.targets == [0, 0, 1] and set(test.indices).isdisjoint(train.indices)


@pytest.mark.parametrize("content, reason", [(b"\x89PNG\r\n\x1a\n garbage", "Truncated File Read"),
                                              (None, "image file is truncated"), (b"", "cannot identify image file")])
def test_a_corrupt_image_in_a_folder_is_named(tmp_path, content, reason):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    bad = tmp_path / "dog" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60] if content is None else content)
    source = load_data(f"folder:{tmp_path}", train=True, image_size=8)
    with pytest.raises(InvalidArgumentError, match=rf"{bad} is not a readable image \(.*{reason}"):
        [source.dataset[i] for i in range(len(source.dataset))]


def test_a_decompression_bomb_is_refused_unopened(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the real limit is 89M pixels; the mechanism is PIL's
    (tmp_path / "cat").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "cat" / "bomb.png")
    with pytest.raises(InvalidArgumentError, match=r"bomb\.png is not a readable image \(.*exceeds limit"):
        read_image(str(tmp_path / "cat" / "bomb.png"))


def test_a_worker_error_keeps_its_one_sentence():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            raise InvalidArgumentError("/data/x.png is not a readable image (truncated)")

    loader = torch.utils.data.DataLoader(Broken(), batch_size=2, num_workers=1)
    with pytest.raises(InvalidArgumentError) as error:
        list(loader_batches(loader))
    assert str(error.value) == "/data/x.png is not a readable image (truncated)"


@pytest.mark.parametrize("spec, options, message", [
    ("synthetic:foo", {}, "synthetic takes no ':' suffix, got 'synthetic:foo'"),
    ("synthetic", {"image_size": 0}, "image size must be between 1 and 1024 pixels, got 0"),
    ("synthetic", {"image_size": 100_000}, "image size must be between 1 and 1024 pixels, got 100000"),
    ("synthetic", {"length": 10 ** 9}, "synthetic makes between 1 and 100000 images, asked for 1000000000")])
def test_synthetic_data_out_of_range_is_one_sentence(spec, options, message):
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        load_data(spec, **options)


def test_a_missing_dataset_names_itself_the_directory_and_the_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError) as missing:
        load_data("cifar10", root=tmp_path)
    message = str(missing.value)
    assert "cifar10" in message and str(tmp_path) in message and "--data-dir" in message and "\n" not in message
    with pytest.raises(DatasetNotFoundError, match="no directory"):
        load_data(f"folder:{tmp_path / 'nowhere'}")


def test_unknown_dataset_suggests_the_nearest():
    with pytest.raises(InvalidArgumentError, match="did you mean 'cifar10'"):
        load_data("cifar-10")


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DISSIPATE_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env" and data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("DISSIPATE_DATA")
    assert data_dir().parts[-2:] == (".cache", "dissipate")


def test_subset_is_seeded_and_bounded():
    source = load_data("synthetic", length=50)
    first, again = source.subset(10, seed=3), source.subset(10, seed=3)
    assert first.indices == again.indices and first.indices == sorted(first.indices)
    assert source.subset(10, seed=4).indices != first.indices
    with pytest.raises(InvalidArgumentError, match="has 50 images; asked for 51"):
        source.subset(51)
