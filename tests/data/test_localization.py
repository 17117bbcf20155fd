import collections
import time
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import tensorflow as tf
from voc_devkit import copy_devkit

from ssl_keras.data import localization
from ssl_keras.data import synthetic
from ssl_keras.data import tfds_builder
from ssl_keras.data import voc
from ssl_keras.data.localization import NO_TARGET
from ssl_keras.data.localization import boxes_to_original
from ssl_keras.data.localization import boxes_to_resized
from ssl_keras.data.localization import letterbox_geometry
from ssl_keras.data.localization import load_localization_data
from ssl_keras.data.localization import resize_example
from ssl_keras.data.localization import select_target
from ssl_keras.data.localization import select_target_tf
from ssl_keras.data.localization import stratified_subset
from ssl_keras.data.source_spec import SourceError

SPLITS = ("train", "val", "test")
SPLIT_SIZES = {"train": 430, "val": 138, "test": 297}

# README: "largest-object images" per class (all objects, difficult included), train/val/test.
README_LARGEST = {
    "aeroplane": (21, 10, 7),
    "bicycle": (13, 3, 10),
    "bird": (23, 10, 15),
    "boat": (8, 4, 11),
    "bottle": (4, 3, 4),
    "bus": (10, 4, 14),
    "car": (67, 13, 34),
    "cat": (18, 7, 20),
    "chair": (16, 6, 14),
    "cow": (13, 2, 10),
    "diningtable": (15, 5, 12),
    "dog": (21, 8, 9),
    "horse": (24, 8, 18),
    "motorbike": (12, 7, 9),
    "person": (96, 25, 58),
    "pottedplant": (10, 1, 5),
    "sheep": (5, 2, 4),
    "sofa": (27, 11, 23),
    "train": (20, 6, 14),
    "tvmonitor": (7, 3, 6),
}


def _obj(label, area, difficult=False, bbox=(0.0, 0.0, 1.0, 1.0)):
    return {"bbox": bbox, "label": label, "is_difficult": difficult, "area_pixels": area}


def _tf_select(objects, image_hw):
    features = {
        "objects": {
            "bbox": tf.constant([o["bbox"] for o in objects], tf.float32, shape=(len(objects), 4)),
            "label": tf.constant([o["label"] for o in objects], tf.int64, shape=(len(objects),)),
            "is_difficult": tf.constant(
                [o["is_difficult"] for o in objects], tf.bool, shape=(len(objects),)
            ),
        }
    }
    box, label, found = select_target_tf(features, tf.constant(image_hw))
    return box.numpy(), int(label), bool(found)


@pytest.fixture(scope="module")
def voc_root(shared_data):
    return shared_data / "voc2007"


@pytest.fixture(scope="module")
def records(voc_root):
    return {split: voc.load_voc_records(voc_root, split).records for split in SPLITS}


@pytest.fixture(scope="module")
def voc_data(voc_root):
    return load_localization_data(f"voc:{voc_root}", image_size=64, batch_size=8)


@pytest.fixture(scope="module")
def voc_batches(voc_data):
    return {
        split: [
            (x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in getattr(voc_data, split)
        ]
        for split in SPLITS
    }


# Target selection.


def test_select_target_skips_difficult_largest():
    objects = [_obj(3, 900, difficult=True), _obj(7, 200), _obj(9, 100)]
    box, label = select_target(objects)
    assert label == 7 and box.dtype == np.float32 and box.shape == (4,)
    assert select_target(objects, skip_difficult=False)[1] == 3


def test_select_target_ties_go_to_first():
    objects = [_obj(1, 50), _obj(2, 300), _obj(4, 300), _obj(5, 300, difficult=True)]
    assert select_target(objects)[1] == 2


@pytest.mark.parametrize("objects", [[], [_obj(1, 10, difficult=True), _obj(2, 5, True)]])
def test_select_target_none_without_non_difficult_object(objects):
    assert select_target(objects) is None


def test_select_target_from_normalized_boxes_uses_voc_plus_one():
    # 100x100 image, TFDS boxes (1-based coordinate / size). A: a 21x1-pixel line (VOC area
    # 21, zero raw area); B: 4x3 pixels (VOC area 12, raw 6). Only the +1 picks A.
    line = {"bbox": (0.05, 0.01, 0.05, 0.21), "label": 1, "is_difficult": False}
    small = {"bbox": (0.01, 0.01, 0.03, 0.04), "label": 2, "is_difficult": False}
    assert select_target([small, line], image_hw=(100, 100))[1] == 1
    assert _tf_select([small, line], (100, 100))[1:] == (1, True)
    with pytest.raises(ValueError, match="image_hw"):
        select_target([small])


@pytest.mark.parametrize(
    "objects",
    [
        [],
        [_obj(1, 0, difficult=True)],
        [
            {"bbox": (0.0, 0.0, 0.5, 0.5), "label": 3, "is_difficult": True},
            {"bbox": (0.1, 0.1, 0.3, 0.3), "label": 4, "is_difficult": False},
            {"bbox": (0.5, 0.5, 0.7, 0.7), "label": 5, "is_difficult": False},
        ],  # Tie: first.
        [
            {"bbox": (0.0, 0.0, 0.2, 0.9), "label": 6, "is_difficult": False},
            {"bbox": (0.0, 0.0, 0.9, 0.2), "label": 7, "is_difficult": False},
        ],  # Aspect tie.
    ],
)
def test_select_target_tf_matches_python(objects):
    objects = [{k: v for k, v in o.items() if k != "area_pixels"} for o in objects]
    expected = select_target(objects, image_hw=(375, 500))
    box, label, found = _tf_select(objects, (375, 500))
    assert found == (expected is not None)
    if expected is None:
        assert label == 0 and not box.any()
    else:
        assert label == expected[1]
        np.testing.assert_array_equal(box, expected[0])


def test_real_images_without_target_counted(voc_root, voc_data):
    """Independent count from the raw XML: images whose objects are all difficult."""
    for split in SPLITS:
        ids = (voc_root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        without = 0
        for image_id in ids:
            root = ElementTree.parse(voc_root / "Annotations" / f"{image_id}.xml").getroot()
            flags = [o.findtext("difficult").strip() for o in root.findall("object")]
            without += all(flag == "1" for flag in flags)
        assert voc_data.skipped[split].get(NO_TARGET, 0) == without
        assert voc_data.num_images[split] == SPLIT_SIZES[split] - without
        assert len(voc_data.image_ids[split]) == voc_data.num_images[split]


def test_real_largest_objects_match_readme(records):
    """With difficult objects included, selection reproduces the README histogram; the
    largest object is difficult in 39 images, whose target moves to another object."""
    moved = 0
    for column, split in enumerate(SPLITS):
        histogram = collections.Counter()
        for record in records[split]:
            box_all, label_all = select_target(record["objects"], skip_difficult=False)
            histogram[voc.VOC_CLASSES[label_all]] += 1
            target = select_target(record["objects"])
            moved += target is None or not np.array_equal(target[0], box_all)
        assert dict(histogram) == {name: counts[column] for name, counts in README_LARGEST.items()}
    assert moved == 39


def test_tf_scan_matches_python_selection_on_real_images(records):
    """The TFDS path's scan (select_target_tf on TFDS features) agrees with the VOC path."""
    split_records = records["val"]
    scan = localization._scan_features(voc.voc_feature_dataset(split_records))
    assert scan.ids == [r["image_id"] for r in split_records]
    assert scan.labels == [select_target(r["objects"])[1] for r in split_records]
    assert scan.original_hw.tolist() == [[r["height"], r["width"]] for r in split_records]


# Resizing and box frames.

SIZES = [(375, 500), (500, 333), (97, 127), (300, 300), (1, 640)]


def test_letterbox_geometry():
    new_h, new_w, top, left = letterbox_geometry(SIZES, 64)
    assert np.maximum(new_h, new_w).tolist() == [64] * len(SIZES)
    assert new_h.tolist() == [48, 64, 49, 64, 1] and new_w.tolist() == [64, 43, 64, 64, 64]
    assert top.tolist() == [8, 0, 7, 0, 31] and left.tolist() == [0, 10, 0, 0, 0]


def test_stretch_keeps_boxes():
    boxes = np.random.default_rng(0).uniform(size=(10, 4)).astype(np.float32)
    np.testing.assert_array_equal(boxes_to_resized(boxes, (375, 500), 64, "stretch"), boxes)
    np.testing.assert_array_equal(boxes_to_original(boxes, (375, 500), 64, "stretch"), boxes)


@pytest.mark.parametrize("image_size", [64, 240])
def test_letterbox_round_trip(image_size):
    rng = np.random.default_rng(1)
    corners = np.sort(rng.uniform(size=(len(SIZES), 2, 2)), axis=1)
    boxes = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], -1)
    resized = boxes_to_resized(boxes, SIZES, image_size, "letterbox")
    assert not np.allclose(resized, boxes)
    back = boxes_to_original(resized, SIZES, image_size, "letterbox")
    # float32 resized boxes; the 1-pixel-high image magnifies their rounding S times.
    np.testing.assert_allclose(back, boxes, atol=1e-5)
    np.testing.assert_allclose(back[:-1], boxes[:-1], atol=1e-6)


def test_boxes_to_original_clips_predictions_on_padding():
    # 375x500 at 64: rows 0-7 are padding; a box there maps to the top edge.
    back = boxes_to_original([0.0, 0.0, 0.05, 1.0], (375, 500), 64, "letterbox")
    assert back.tolist() == [0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("hw", [(30, 60), (45, 20)])
def test_resize_example_letterbox_pads_and_moves_box(hw):
    image = tf.fill((*hw, 3), tf.constant(200, tf.uint8))
    box = np.asarray([0.25, 0.1, 0.75, 0.5], np.float32)
    out, out_box = resize_example(image, box, image_size=32, resize="letterbox")
    out = out.numpy()
    new_h, new_w, top, left = (int(v) for v in letterbox_geometry(hw, 32))
    content = np.zeros((32, 32), bool)
    content[top : top + new_h, left : left + new_w] = True
    np.testing.assert_allclose(out[content], 200.0, atol=1e-3)
    np.testing.assert_array_equal(out[~content], localization.LETTERBOX_FILL)
    np.testing.assert_allclose(out_box, boxes_to_resized(box, hw, 32, "letterbox"), atol=1e-6)
    stretched, same_box = resize_example(image, box, image_size=32, resize="stretch")
    assert stretched.shape == (32, 32, 3) and np.array_equal(same_box.numpy(), box)


def test_unknown_resize_policy():
    with pytest.raises(ValueError, match="stretch, letterbox. Received: resize='crop'"):
        boxes_to_original([0, 0, 1, 1], (10, 10), 8, "crop")


# Label subsets.


def _labeled_pool():
    counts = {0: 40, 1: 21, 2: 7, 3: 2, 4: 1}
    ids, labels = [], []
    for label, count in counts.items():
        ids += [f"img{label}-{i:03d}" for i in range(count)]
        labels += [label] * count
    return ids, labels, counts


def test_stratified_subset_per_class_proportions():
    ids, labels, counts = _labeled_pool()
    by_id = dict(zip(ids, labels))
    subset = stratified_subset(ids, labels, fraction=0.25, seed=0)
    assert subset == sorted(subset) and len(set(subset)) == len(subset)
    kept = collections.Counter(by_id[i] for i in subset)
    # round(0.25 * n) half up, at least 1: 10, 5 (5.25), 2 (1.75), 1 (0.5), 1 (0.25 -> 1).
    assert dict(kept) == {0: 10, 1: 5, 2: 2, 3: 1, 4: 1}


def test_stratified_subset_is_seeded():
    ids, labels, _ = _labeled_pool()
    first = stratified_subset(ids, labels, fraction=0.3, seed=5)
    assert first == stratified_subset(ids, labels, fraction=0.3, seed=5)
    assert first == stratified_subset(ids[::-1], labels[::-1], fraction=0.3, seed=5)
    assert first != stratified_subset(ids, labels, fraction=0.3, seed=6)
    assert stratified_subset(ids, labels, fraction=1.0, seed=5) == sorted(ids)


def test_stratified_subset_num_is_exact_and_stratified():
    ids, labels, counts = _labeled_pool()
    by_id = dict(zip(ids, labels))
    for num in (1, 5, 14, 50, len(ids)):
        subset = stratified_subset(ids, labels, num=num, fraction=0.9, seed=2)
        assert len(subset) == num
    kept = collections.Counter(by_id[i] for i in stratified_subset(ids, labels, num=14, seed=2))
    assert set(kept) == set(counts) and kept[0] > kept[1] > kept[2]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, None])
def test_stratified_subset_invalid_fraction(fraction):
    ids, labels, _ = _labeled_pool()
    with pytest.raises(ValueError, match=r"range \(0, 1\]"):
        stratified_subset(ids, labels, fraction=fraction)


def test_stratified_subset_invalid_num():
    ids, labels, _ = _labeled_pool()
    with pytest.raises(ValueError, match="at most the 71"):
        stratified_subset(ids, labels, num=72)
    with pytest.raises(ValueError, match="int >= 1"):
        stratified_subset(ids, labels, num=0)


# load_localization_data.


def test_voc_batches(voc_data, voc_batches):
    assert voc_data.class_names == voc.VOC_CLASSES and voc_data.resize_policy == "stretch"
    for split in SPLITS:
        batches = voc_batches[split]
        assert sum(len(x) for x, _ in batches) == voc_data.num_images[split]
        assert all(len(x) == 8 for x, _ in batches[:-1])
        for images, targets in batches:
            assert images.dtype == np.float32 and images.shape[1:] == (64, 64, 3)
            assert 0.0 <= images.min() and images.max() <= 255.0
            boxes = targets["boxes"]
            assert boxes.dtype == np.float32 and boxes.shape == (len(images), 4)
            assert (0.0 <= boxes).all() and (boxes <= 1.0).all()
            assert (boxes[:, :2] <= boxes[:, 2:]).all()
            assert targets["labels"].dtype == np.int32
            assert ((0 <= targets["labels"]) & (targets["labels"] < 20)).all()
        assert getattr(voc_data, split).cardinality() == len(batches)
    assert voc_data.train_ids == sorted(voc_data.train_ids) and len(voc_data.train_ids) == 430
    assert voc_data.original_hw["test"].shape == (297, 2)


def test_voc_val_follows_image_ids(voc_data, voc_batches, records):
    by_id = {r["image_id"]: r for r in records["val"]}
    labels = np.concatenate([y["labels"] for _, y in voc_batches["val"]])
    boxes = np.concatenate([y["boxes"] for _, y in voc_batches["val"]])
    for i, image_id in enumerate(voc_data.image_ids["val"]):
        record = by_id[image_id]
        box, label = select_target(record["objects"])
        assert labels[i] == label
        np.testing.assert_allclose(boxes[i], box, atol=1e-6)  # stretch: same normalized box
        assert voc_data.original_hw["val"][i].tolist() == [record["height"], record["width"]]


def _flat(batches):
    """(images, boxes, labels) of a list of NumPy batches, concatenated."""
    return (
        np.concatenate([x for x, _ in batches]),
        np.concatenate([y["boxes"] for _, y in batches]),
        np.concatenate([y["labels"] for _, y in batches]),
    )


def _sorted_rows(boxes, labels):
    """Boxes and labels as rows sorted lexicographically, to compare shuffled splits."""
    rows = np.concatenate([boxes, labels[:, None].astype(np.float32)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def test_voc_targets_are_the_dataset_targets_stretch(voc_data, voc_batches, records):
    """Under stretch the targets, read without decoding, are exactly what val/test yield."""
    for split in ("val", "test"):
        _, boxes, labels = _flat(voc_batches[split])
        targets = voc_data.targets[split]
        assert targets["boxes"].dtype == np.float32 and targets["boxes"].shape == (len(boxes), 4)
        assert targets["labels"].dtype == np.int32
        np.testing.assert_array_equal(targets["boxes"], boxes)
        np.testing.assert_array_equal(targets["labels"], labels)
    # Train is shuffled: same rows as a multiset, and in `train_ids` order by id.
    _, boxes, labels = _flat(voc_batches["train"])
    train = voc_data.targets["train"]
    np.testing.assert_array_equal(
        _sorted_rows(train["boxes"], train["labels"]), _sorted_rows(boxes, labels)
    )
    by_id = {r["image_id"]: select_target(r["objects"]) for r in records["train"]}
    assert train["labels"].tolist() == [by_id[i][1] for i in voc_data.train_ids]
    np.testing.assert_array_equal(
        train["boxes"], np.stack([by_id[i][0] for i in voc_data.train_ids])
    )


@pytest.mark.large
def test_voc_label_fraction_letterbox(voc_root, records):
    data = load_localization_data(
        f"voc:{voc_root}",
        image_size=64,
        batch_size=8,
        label_fraction=0.25,
        resize="letterbox",
        seed=3,
    )
    train_labels = {r["image_id"]: select_target(r["objects"])[1] for r in records["train"]}
    per_class = collections.Counter(train_labels.values())
    expected = sum(max(1, int(np.floor(0.25 * n + 0.5))) for n in per_class.values())
    assert data.num_images["train"] == len(data.train_ids) == expected
    assert 0.2 * 430 < expected < 0.3 * 430 and data.train_pool_size == 430
    assert data.train_ids == stratified_subset(
        list(train_labels), list(train_labels.values()), fraction=0.25, seed=3
    )
    got = collections.Counter()
    train_boxes, train_labels_seen = [], []
    for _, targets in data.train:
        got.update(targets["labels"].numpy().tolist())
        train_boxes.append(targets["boxes"].numpy())
        train_labels_seen.append(targets["labels"].numpy())
    assert got == collections.Counter(train_labels[i] for i in data.train_ids)
    # Train targets: only the label subset, in train_ids order, and (moved into the letterbox
    # frame) the boxes the shuffled train dataset yields.
    train = data.targets["train"]
    assert len(train["boxes"]) == len(train["labels"]) == len(data.train_ids) < 430
    assert train["labels"].tolist() == [train_labels[i] for i in data.train_ids]
    np.testing.assert_allclose(
        _sorted_rows(
            boxes_to_resized(train["boxes"], data.original_hw["train"], 64, "letterbox"),
            train["labels"],
        ),
        _sorted_rows(np.concatenate(train_boxes), np.concatenate(train_labels_seen)),
        atol=1e-5,
    )
    # Letterbox boxes lie inside the image content, and map back to the original boxes.
    val_boxes = np.concatenate([y["boxes"].numpy() for _, y in data.val])
    hw = data.original_hw["val"]
    new_h, new_w, top, left = letterbox_geometry(hw, 64)
    assert (val_boxes[:, 0] * 64 >= top - 1e-4).all()
    assert (val_boxes[:, 3] * 64 <= left + new_w + 1e-4).all()
    by_id = {r["image_id"]: r for r in records["val"]}
    original = np.stack([select_target(by_id[i]["objects"])[0] for i in data.image_ids["val"]])
    np.testing.assert_allclose(
        boxes_to_original(val_boxes, hw, 64, "letterbox"), original, atol=1e-5
    )
    # The targets stay in the original frame; the dataset's boxes are them, resized.
    np.testing.assert_array_equal(data.targets["val"]["boxes"], original)
    np.testing.assert_allclose(
        boxes_to_resized(data.targets["val"]["boxes"], hw, 64, "letterbox"), val_boxes, atol=1e-5
    )
    assert not np.allclose(data.targets["val"]["boxes"], val_boxes, atol=1e-3)
    again = load_localization_data(
        f"voc:{voc_root}", image_size=64, batch_size=8, label_fraction=0.25, seed=4
    )
    assert again.train_ids != data.train_ids and len(again.train_ids) == expected


def test_synthetic_spec():
    data = load_localization_data("synthetic:40", image_size=32, batch_size=4, num_labeled=10)
    assert data.class_names == synthetic.SYNTHETIC_CLASSES
    assert data.num_images == {"train": 10, "val": 6, "test": 6} and data.train_pool_size == 28
    assert data.image_ids["val"] == [f"synthetic-{i:05d}" for i in range(28, 34)]
    arrays = synthetic.make_synthetic_arrays(num_images=40, image_size=32)
    val = [(x.numpy(), y) for x, y in data.val]
    boxes = np.concatenate([y["boxes"].numpy() for _, y in val])
    labels = np.concatenate([y["labels"].numpy() for _, y in val])
    np.testing.assert_allclose(boxes, arrays["boxes"][28:34, 0], atol=1e-6)
    np.testing.assert_array_equal(labels, arrays["labels"][28:34, 0])
    np.testing.assert_allclose(
        np.concatenate([x for x, _ in val]), arrays["image"][28:34].astype(np.float32), atol=1e-3
    )
    assert sum(len(x) for x, _ in data.train) == 10
    np.testing.assert_array_equal(data.targets["val"]["boxes"], boxes)
    np.testing.assert_array_equal(data.targets["val"]["labels"], labels)
    np.testing.assert_array_equal(data.targets["test"]["boxes"], arrays["boxes"][34:, 0])
    rows = [int(i.split("-")[1]) for i in data.train_ids]
    train = data.targets["train"]
    assert len(train["labels"]) == len(data.train_ids) == 10
    np.testing.assert_array_equal(train["boxes"], arrays["boxes"][rows, 0])
    np.testing.assert_array_equal(train["labels"], arrays["labels"][rows, 0])
    seen = [(y["boxes"].numpy(), y["labels"].numpy()) for _, y in data.train]
    np.testing.assert_array_equal(
        _sorted_rows(train["boxes"], train["labels"]),
        _sorted_rows(np.concatenate([b for b, _ in seen]), np.concatenate([l for _, l in seen])),
    )


def test_synthetic_one_split():
    """`splits` reads only what is asked; the scenes are the same as with all splits."""
    full = load_localization_data("synthetic:40", image_size=32, batch_size=4)
    data = load_localization_data("synthetic:40", image_size=32, batch_size=4, splits=("val",))
    assert data.train is None and data.test is None and data.train_stream is None
    assert data.train_ids == [] and data.train_pool_size == 0
    assert data.num_images == {"val": 6} and set(data.image_ids) == {"val"}
    assert set(data.targets) == set(data.original_hw) == set(data.skipped) == {"val"}
    assert data.image_ids["val"] == full.image_ids["val"]
    np.testing.assert_array_equal(data.targets["val"]["boxes"], full.targets["val"]["boxes"])
    assert data.description == "synthetic shapes: val 6 images; stretch to 32x32"
    assert full.description == "synthetic shapes: train 28, val 6, test 6 images; stretch to 32x32"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("photos_folder_xyz", "image folder does not have"),
        ("voc:/data/VOC2007:train", "drop :train"),
        ("tfds:cifar10", "voc/2007, voc/2012 only"),
        ("tfds:voc/2007:test", "use tfds:voc/2007"),
        ("gcs:bucket", "detect takes voc:PATH"),
        ("synthetic:5", "N >= 7"),
    ],
)
def test_bad_specs(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos_folder_xyz").mkdir()
    with pytest.raises(SourceError, match=message):
        load_localization_data(spec, image_size=32, batch_size=4)


def test_missing_voc_split(tmp_path, voc_root):
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("")
    with pytest.raises(
        SourceError, match=r"val.txt; available splits: train; create ImageSets/Main/val.txt"
    ):
        load_localization_data(f"voc:{tmp_path}", image_size=32, batch_size=4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(label_fraction=0.0), r"range \(0, 1\]"),
        (dict(label_fraction=2.0), r"range \(0, 1\]"),
        (dict(resize="crop"), "stretch, letterbox"),
        (dict(image_size=0), "image_size"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_invalid_arguments(kwargs, message):
    args = dict(image_size=32, batch_size=4) | kwargs
    with pytest.raises(ValueError, match=message):
        load_localization_data("synthetic:20", **args)


@pytest.fixture(scope="module")
def test_only_devkits(voc_root, tmp_path_factory):
    """Two copies of the same real test images: a full year folder, and one with only test.txt."""
    base = tmp_path_factory.mktemp("devkits")
    full = copy_devkit(voc_root, base / "full", sizes={"train": 6, "val": 3, "test": 5})
    only = copy_devkit(voc_root, base / "only", sizes={"test": 5})
    assert only["test"] == full["test"]
    assert sorted(p.name for p in (base / "only" / "ImageSets" / "Main").iterdir()) == ["test.txt"]
    return base / "full", base / "only"


@pytest.mark.large
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_voc_folder_with_only_test_set(test_only_devkits, resize):
    full_root, only_root = test_only_devkits
    full = load_localization_data(f"voc:{full_root}", image_size=32, batch_size=2, resize=resize)
    data = load_localization_data(
        f"voc:{only_root}", image_size=32, batch_size=2, resize=resize, splits=("test",)
    )
    assert data.train is None and data.val is None and data.train_stream is None
    assert data.train_ids == [] and data.train_pool_size == 0
    for per_split in (
        data.num_images,
        data.image_ids,
        data.original_hw,
        data.skipped,
        data.repaired,
        data.targets,
    ):
        assert set(per_split) == {"test"}
    assert data.num_images == {"test": 5} and data.image_ids["test"] == full.image_ids["test"]
    assert data.description == f"VOC {only_root}: test 5 images; {resize} to 32x32"
    np.testing.assert_array_equal(data.original_hw["test"], full.original_hw["test"])
    for key in ("boxes", "labels"):
        np.testing.assert_array_equal(data.targets["test"][key], full.targets["test"][key])
    images, boxes, labels = _flat(
        [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in data.test]
    )
    full_images, full_boxes, full_labels = _flat(
        [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in full.test]
    )
    np.testing.assert_array_equal(images, full_images)
    np.testing.assert_array_equal(boxes, full_boxes)
    np.testing.assert_array_equal(labels, full_labels)
    np.testing.assert_allclose(
        boxes_to_resized(data.targets["test"]["boxes"], data.original_hw["test"], 32, resize),
        boxes,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "splits, message",
    [
        (localization.SPLITS, r"train.txt; .* \(detect needs the train, val and test image sets\)"),
        (
            ("test", "val"),
            r"val.txt; .* \(splits=\('val', 'test'\) asks for the val and test image sets\)",
        ),
        (("train",), r"train.txt; .* \(splits=\('train',\) asks for the train image set\)"),
    ],
)
def test_voc_folder_with_only_test_set_names_requested_splits(test_only_devkits, splits, message):
    _, only_root = test_only_devkits
    with pytest.raises(SourceError, match=message) as error:
        load_localization_data(f"voc:{only_root}", image_size=32, batch_size=2, splits=splits)
    assert "available splits: test" in str(error.value)


@pytest.mark.parametrize(
    "splits, message",
    [
        ("test", r"not one string; use splits=\('test',\). Received: splits='test'"),
        ((), r"at least one of train, val, test. Received: splits=\(\)"),
        (("test", "tset"), r"'tset' is not a split. Received: splits=\('test', 'tset'\)"),
        (("validation",), r"'validation' is not a split. Received: splits=\('validation',\)"),
        (None, r"Received: splits=None"),
    ],
)
def test_invalid_splits(splits, message):
    with pytest.raises(ValueError, match=message):
        load_localization_data("synthetic:20", image_size=32, batch_size=4, splits=splits)


def test_tfds_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    if tfds_builder.network_available():
        monkeypatch.setattr(tfds_builder, "network_available", lambda: False)
    start = time.monotonic()
    with pytest.raises(SourceError, match="voc:") as error:
        load_localization_data("tfds:voc/2007", image_size=32, batch_size=4)
    assert time.monotonic() - start < 10.0
    assert "manual_dir" in str(error.value)


@pytest.mark.large
def test_tfds_path_with_fake_builder(monkeypatch, records):
    """The TFDS branch (encoded-image scan, id filter, decode) on TFDS-shaped VOC features."""
    splits = {
        "train": records["train"][:24],
        "validation": records["val"][:10],
        "test": records["test"][:10],
    }
    # One test image whose objects are all difficult must be counted, not loaded.
    all_difficult = dict(splits["test"][0])
    all_difficult["objects"] = [{**o, "is_difficult": True} for o in all_difficult["objects"]]
    splits["test"] = [all_difficult] + splits["test"][1:]

    loaded = []

    def fake_load(name, split, *, shuffle=False, seed=None, decode_images=True, data_dir=None):
        assert name == "voc/2007"
        loaded.append(split)
        dataset = voc.voc_feature_dataset(splits[split], shuffle=shuffle, seed=seed)
        if not decode_images:
            dataset = dataset.map(lambda f: {**f, "image": tf.io.encode_jpeg(f["image"])})
        return dataset

    monkeypatch.setattr(voc, "load_tfds_voc", fake_load)
    data = load_localization_data(
        "tfds:voc/2007", image_size=32, batch_size=4, num_labeled=12, resize="letterbox"
    )
    assert data.num_images == {"train": 12, "val": 10, "test": 9}
    assert data.skipped["test"] == {NO_TARGET: 1} and data.skipped["val"] == {}
    assert data.image_ids["test"] == [r["image_id"] for r in splits["test"][1:]]
    train_labels = {r["image_id"]: select_target(r["objects"])[1] for r in splits["train"]}
    got = collections.Counter()
    for images, targets in data.train:
        assert images.shape[1:] == (32, 32, 3)
        got.update(targets["labels"].numpy().tolist())
    assert got == collections.Counter(train_labels[i] for i in data.train_ids)
    boxes = np.concatenate([y["boxes"].numpy() for _, y in data.test])
    expected = np.stack([select_target(r["objects"])[0] for r in splits["test"][1:]])
    np.testing.assert_allclose(
        boxes, boxes_to_resized(expected, data.original_hw["test"], 32, "letterbox"), atol=1e-5
    )
    np.testing.assert_array_equal(data.targets["test"]["boxes"], expected)
    assert data.targets["train"]["labels"].tolist() == [train_labels[i] for i in data.train_ids]
    assert set(loaded) == {"train", "validation", "test"}
    # Only the requested TFDS split is opened, scanned and loaded.
    loaded.clear()
    test_only = load_localization_data(
        "tfds:voc/2007", image_size=32, batch_size=4, resize="letterbox", splits=("test",)
    )
    assert set(loaded) == {"test"} and test_only.train is None and test_only.val is None
    assert test_only.image_ids == {"test": data.image_ids["test"]}
    np.testing.assert_array_equal(test_only.targets["test"]["boxes"], expected)
    assert test_only.description == "TFDS voc/2007: test 9 images; letterbox to 32x32"


def test_empty_voc_split(tmp_path):
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / folder).mkdir(parents=True)
    for split in SPLITS:
        (tmp_path / "ImageSets" / "Main" / f"{split}.txt").write_text("000001\n")
    with pytest.raises(SourceError, match="image set train has no usable image .*1 neither"):
        load_localization_data(f"voc:{tmp_path}", image_size=32, batch_size=4)
