"""The data path: whole batches equal the image-by-image transforms, keyed augmentation, resumable batch order."""
import copy
import importlib.util
import os

import numpy as np
import pytest

from paddle_mbnet.training import trainer
from paddle_mbnet.training.config import apply_overrides, load_config
from paddle_mbnet.errors import ConfigError, DataError
from paddle_mbnet.training.data import _arrays, build_datasets, eval_loader, train_image_size, write_tiny_cifar10
from helpers import ROOT


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    archive = write_tiny_cifar10(str(tmp_path_factory.mktemp("data") / "cifar-10-python.tar.gz"), 60, 20)
    # the schema's augmentation (4-px shift, random flips), whatever the shipped config picks: tests set their own
    return load_config(f"{ROOT}/configs/mbv1_cifar.yaml", [f"DataLoader.data_file={archive}", "DataLoader.val_size=12",
                                                           "DataLoader.batch_size=8", "DataLoader.num_workers=0",
                                                           "DataLoader.crop_padding=4", "DataLoader.flip=random"])


def _one_by_one(split, positions):
    pairs = [split[int(p)] for p in positions]
    return np.stack([np.asarray(image) for image, _ in pairs]), np.stack([label for _, label in pairs])


@pytest.mark.parametrize("epoch, augment", [(0, {}), (3, {}), (3, {"crop_padding": 2, "flip": "alternate"})])
def test_batch_equals_the_per_image_transforms(cfg, epoch, augment):
    train, val, _ = build_datasets({**cfg["DataLoader"], **augment}, seed=5)
    train.set_epoch(epoch)
    positions = np.array([7, 0, 33, 47, 7])
    for split in (train, val):
        images, labels = split.batch(positions[positions < len(split)])
        want_images, want_labels = _one_by_one(split, positions[positions < len(split)])
        assert images.dtype == np.float32 and labels.dtype == np.int64 and labels.shape == want_labels.shape
        np.testing.assert_allclose(images, want_images, atol=1e-6)
        np.testing.assert_array_equal(labels, want_labels)


def test_augmentation_is_keyed_by_seed_epoch_and_image(cfg):
    train, _, _ = build_datasets(cfg["DataLoader"], seed=5)
    positions = np.arange(16)
    train.set_epoch(1)
    first = train.batch(positions)[0]
    train.set_epoch(2)
    other_epoch = train.batch(positions)[0]
    again, _, _ = build_datasets(cfg["DataLoader"], seed=5)
    again.set_epoch(1)
    assert np.array_equal(again.batch(positions[::-1])[0], first[::-1])  # order and process do not matter
    assert not np.array_equal(other_epoch, first)
    other_seed, _, _ = build_datasets(cfg["DataLoader"], seed=6)
    other_seed.set_epoch(1)
    assert not np.array_equal(other_seed.batch(positions)[0], first)


def test_resumed_epoch_skips_exactly_the_trained_batches(cfg):
    train, val, test = build_datasets(cfg["DataLoader"], seed=5)
    loader, _, _ = trainer.build_loaders(cfg, train, val, test)
    loader.dataset.set_epoch(2)
    full = [images.numpy() for images, _ in loader]
    loader.dataset.set_epoch(2, skip=2)
    rest = [images.numpy() for images, _ in loader]
    assert len(full) == len(train) // 8 and len(rest) == len(full) - 2
    for got, want in zip(rest, full[2:]):
        np.testing.assert_array_equal(got, want)


def test_eval_loader_covers_the_split_in_order(cfg):
    _, val, _ = build_datasets(cfg["DataLoader"], seed=5)
    batches = list(eval_loader(val, batch_size=5, num_workers=0))
    assert [labels.shape[0] for _, labels in batches] == [5, 5, 2]
    labels = np.concatenate([labels.numpy() for _, labels in batches]).ravel()
    np.testing.assert_array_equal(labels, val.labels())


def _with(cfg, **data_loader):
    changed = {**cfg, "DataLoader": {**cfg["DataLoader"], **data_loader}}
    train, _, _ = build_datasets(changed["DataLoader"], seed=5)
    train.set_epoch(1)
    return train


@pytest.mark.parametrize("image_size", [32, 48])  # 32: the batch path against the per-image one; 48: per image only
def test_cutout_blanks_exactly_one_clipped_square_per_image(cfg, image_size):
    plain, cut = _with(cfg, image_size=image_size, cutout=0), _with(cfg, image_size=image_size, cutout=8)
    positions = np.arange(24)
    before, after = plain.batch(positions)[0], cut.batch(positions)[0]
    np.testing.assert_allclose(after, _one_by_one(cut, positions)[0], atol=1e-6)
    side, tolerance = 8 * image_size // 32, 0.5 / 255 / 0.2  # the fill is the mean rounded to a uint8 level
    _, _, centres = cut.augment.draws(cut.indices[positions])
    areas = []
    for image, was, (row, col) in zip(after, before, centres):
        square = np.zeros(image.shape[1:], dtype=bool)
        square[max(row - side // 2, 0):row - side // 2 + side, max(col - side // 2, 0):col - side // 2 + side] = True
        assert np.all(np.abs(image[:, square]) < tolerance)  # the mean colour: 0 after normalisation
        np.testing.assert_array_equal(image[:, ~square], was[:, ~square])  # nothing outside the square changed
        # the image is now fixed by ``square``: its size shows whole squares and clipped ones were drawn
        areas.append(int(square.sum()))
    assert max(areas) == side * side and min(areas) < side * side  # whole squares, and squares clipped at a border


def test_cutout_keeps_crops_and_flips_and_needs_augment(cfg):
    plain, cut = _with(cfg, cutout=0), _with(cfg, cutout=4)
    offsets, flips, no_centres = plain.augment.draws(np.arange(10))
    cut_offsets, cut_flips, centres = cut.augment.draws(np.arange(10))
    assert no_centres is None
    np.testing.assert_array_equal(offsets, cut_offsets)
    np.testing.assert_array_equal(flips, cut_flips)
    assert centres.shape == (10, 2) and centres.min() >= 0 and centres.max() < 32
    with pytest.raises(DataError, match="DataLoader.cutout=4 .*DataLoader.augment=true"):
        _with(cfg, augment=False, cutout=4)


def test_alternate_flip_shows_each_image_both_ways_every_two_epochs(cfg):
    alternate = _with(cfg, flip="alternate").augment
    flips = []
    for epoch in range(4):
        alternate.epoch = epoch
        flips.append(alternate.draws(np.arange(alternate.num_images))[1])
    assert 0.25 < flips[0].mean() < 0.75  # a random half to start with
    for earlier, later in zip(flips, flips[1:]):
        np.testing.assert_array_equal(later, ~earlier)
    random = _with(cfg).augment
    random.epoch = 1
    offsets, random_flips, _ = random.draws(np.arange(random.num_images))
    alternate.epoch = 1
    np.testing.assert_array_equal(alternate.draws(np.arange(alternate.num_images))[0], offsets)  # crops unchanged
    assert not np.array_equal(random_flips, ~flips[0])  # random flips do not alternate
    with_cutout = [_with(cfg, flip=flip, cutout=8).augment for flip in ("random", "alternate")]
    centres = [augment.draws(np.arange(augment.num_images))[2] for augment in with_cutout]
    np.testing.assert_array_equal(centres[0], centres[1])  # cutout squares do not move with the flip mode


def test_quantize_calibration_sees_unaugmented_images(cfg, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tools"))  # the tool imports its _bootstrap beside it
    spec = importlib.util.spec_from_file_location("quantize_tool", os.path.join(ROOT, "tools", "quantize.py"))
    quantize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quantize)
    augmented = {**cfg, "DataLoader": {**cfg["DataLoader"], "flip": "alternate", "crop_padding": 2, "cutout": 8}}
    batches, _ = quantize._data(augmented, calib=8, test_size=4)
    plain, _, _ = build_datasets({**cfg["DataLoader"], "augment": False}, cfg["Global"]["seed"])
    chosen = np.random.RandomState(cfg["Global"]["seed"]).permutation(len(plain))[:8]
    np.testing.assert_array_equal(batches[0], plain.batch(chosen)[0])


@pytest.mark.parametrize("padding, image_size, scaled", [(0, 32, 0), (2, 32, 2), (8, 32, 8), (2, 64, 4), (1, 16, 1)])
def test_crop_padding_bounds_the_shift(cfg, padding, image_size, scaled):
    augment = _with(cfg, crop_padding=padding, image_size=image_size).augment
    offsets = augment.draws(np.arange(augment.num_images))[0]
    assert offsets.min() == 0 and offsets.max() == 2 * scaled  # scaled with the image, never rounded to 0


def test_no_crop_padding_leaves_each_image_or_its_mirror(cfg):
    train = _with(cfg, crop_padding=0)
    images, flips = _arrays(train.base)[0][:4], train.augment.draws(np.arange(4))[1]
    crops = train.augment.batch(images, np.arange(4))
    np.testing.assert_array_equal(crops, np.where(flips[:, None, None, None], images[..., ::-1], images))


@pytest.mark.parametrize("switch_off, key, value, message", [
    ({"augment": False}, "cutout", 8, "DataLoader.cutout=8 has no effect while DataLoader.augment=false; set "
                                      "DataLoader.augment=true, or set DataLoader.cutout=0"),
    ({}, "progressive_start", 0.3, "DataLoader.progressive_start=0.3 has no effect while "
                                   "DataLoader.progressive_min_size=0; set DataLoader.progressive_min_size (e.g. 16, "
                                   "below DataLoader.image_size), or set DataLoader.progressive_start=0.5"),
])
def test_a_key_of_a_switched_off_feature_names_both_fixes(cfg, switch_off, key, value, message):
    with pytest.raises(DataError) as raised:
        _with(cfg, **switch_off, **{key: value})
    assert str(raised.value) == message


@pytest.mark.parametrize("key, value", [("crop_padding", 2), ("flip", "alternate")])
def test_augmentation_keys_need_augment(cfg, key, value):
    with pytest.raises(DataError, match=f"DataLoader.{key}={value} .*DataLoader.augment=true"):
        _with(cfg, augment=False, **{key: value})


def _sizes(cfg, epochs, **data_loader):
    dl_cfg = {**cfg["DataLoader"], **data_loader}
    return [train_image_size(dl_cfg, (epoch + 1) / epochs) for epoch in range(epochs)]


def test_progressive_resizing_holds_then_grows_in_steps_to_full_size(cfg):
    sizes = _sizes(cfg, 20, progressive_min_size=24, progressive_start=0.5, progressive_end=0.8)
    # epochs ending at <= 50 % of the run: 24 px; from 80 % on: 32; between: linear, floored to 4-px steps
    assert sizes == [24] * 12 + [28] * 3 + [32] * 5
    assert _sizes(cfg, 1, progressive_min_size=24) == [32]  # a 1-epoch run ends at 100 %: full size
    assert _sizes(cfg, 6, progressive_min_size=0) == [32] * 6
    assert _sizes(cfg, 4, progressive_min_size=16, progressive_start=0.0, progressive_end=0.99) == [20, 24, 28, 32]
    assert _sizes(cfg, 4, progressive_min_size=16, progressive_start=0.0, progressive_end=1.0) == [20, 24, 28, 32]
    assert _sizes(cfg, 4, progressive_min_size=16, progressive_start=0.25, progressive_end=1.0) == [16, 20, 24, 32]
    # 75 % lies exactly on the 28-px step (8 + 24 * 0.25 / 0.3), which float division puts a hair below
    assert _sizes(cfg, 4, progressive_min_size=8, progressive_start=0.5, progressive_end=0.8) == [8, 8, 28, 32]


def test_progressive_sizes_follow_the_step_budget(cfg):
    """With Global.max_steps the run ends early; its sizes count steps as the schedule does, ending at full size."""
    run = {"steps_per_epoch": 10}
    budget = {**cfg, "Global": {**cfg["Global"], "epochs": 10, "max_steps": 30},
              "DataLoader": {**cfg["DataLoader"], "progressive_min_size": 24}}
    assert [trainer._epoch_image_size(run, budget, epoch) for epoch in range(3)] == [24, 24, 32]


def test_progressive_resizing_below_the_networks_smallest_input_is_refused(cfg, tmp_path):
    baseline = apply_overrides(copy.deepcopy(cfg), ["Arch.name=resnet18", "Arch.small_input=false",
                                                    "DataLoader.image_size=40", "DataLoader.progressive_min_size=24",
                                                    f"Global.output_dir={tmp_path}/run"])
    with pytest.raises(ConfigError, match="DataLoader.progressive_min_size=24 is smaller than the 32 px that resnet18"):
        trainer.main(baseline, progress=False)


@pytest.mark.parametrize("data_loader, message", [
    ({"progressive_min_size": 32}, "progressive_min_size=32 must be below DataLoader.image_size=32"),
    ({"progressive_min_size": 24, "progressive_start": 0.6, "progressive_end": 0.5}, "progressive_end=0.5 is before"),
    ({"progressive_end": 0.9}, "progressive_end=0.9 has no effect while DataLoader.progressive_min_size=0"),
])
def test_progressive_resizing_refuses_impossible_settings(cfg, data_loader, message):
    with pytest.raises(DataError, match=message):
        _with(cfg, **data_loader)


def test_resized_batches_average_the_pixels_they_cover():
    import paddle

    from paddle_mbnet.training.loop import _resized

    images = paddle.rand([2, 3, 32, 32])
    halved = _resized(images, 16).numpy()
    expected = images.numpy().reshape(2, 3, 16, 2, 16, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(halved, expected, rtol=1e-5, atol=1e-6)
    assert _resized(images, 32) is images and _resized(images, None) is images
    # a fractional scale: output pixel i averages input rows/columns floor(i*32/24) .. ceil((i+1)*32/24) - 1
    bounds = [(i * 32 // 24, -(-(i + 1) * 32 // 24)) for i in range(24)]
    pixels = images.numpy()
    expected = np.array([[pixels[..., r0:r1, c0:c1].mean(axis=(-2, -1)) for c0, c1 in bounds] for r0, r1 in bounds])
    np.testing.assert_allclose(_resized(images, 24).numpy(), expected.transpose(2, 3, 0, 1), rtol=1e-5, atol=1e-6)
