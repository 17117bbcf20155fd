import numpy as np
import pytest

from ssl_keras.data import synthetic
from ssl_keras.data.synthetic import SYNTHETIC_CLASSES
from ssl_keras.data.synthetic import make_synthetic_scene
from ssl_keras.data.synthetic import synthetic_dataset


def _areas(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def test_scene_types_and_shapes():
    image, boxes, labels = make_synthetic_scene(3, image_size=64, seed=1)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert boxes.dtype == np.float32 and labels.dtype == np.int32
    assert boxes.shape == (len(labels), 4)
    assert 1 <= len(labels) <= synthetic.MAX_OBJECTS


def test_same_index_and_seed_give_identical_bytes():
    first = make_synthetic_scene(11, image_size=64, seed=5)
    second = make_synthetic_scene(11, image_size=64, seed=5)
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()


def test_different_index_or_seed_give_different_images():
    base = make_synthetic_scene(11, image_size=64, seed=5)[0]
    assert base.tobytes() != make_synthetic_scene(12, image_size=64, seed=5)[0].tobytes()
    assert base.tobytes() != make_synthetic_scene(11, image_size=64, seed=6)[0].tobytes()


def test_boxes_are_valid_and_first_is_largest():
    counts, classes = set(), set()
    for index in range(200):
        _, boxes, labels = make_synthetic_scene(index, image_size=64)
        assert np.all(boxes >= 0.0) and np.all(boxes <= 1.0)
        assert np.all(boxes[:, 0] < boxes[:, 2]) and np.all(boxes[:, 1] < boxes[:, 3])
        assert np.all((labels >= 0) & (labels < len(SYNTHETIC_CLASSES)))
        areas = _areas(boxes)
        # The main object must be clearly the largest: the localization target.
        assert np.all(areas[1:] < 0.8 * areas[0])
        counts.add(len(labels))
        classes.update(labels.tolist())
    assert counts == {1, 2, 3}
    assert classes == set(range(len(SYNTHETIC_CLASSES)))


@pytest.mark.parametrize("index", range(40))
def test_main_object_pixels_differ_from_background(index):
    size = 96
    image, boxes, _ = make_synthetic_scene(index, image_size=size, seed=2)
    # The background is the first thing drawn from the scene's generator.
    background = synthetic._draw_background(np.random.default_rng((2, index)), size)
    background = np.clip(background, 0, 255).round()
    y0, x0, y1, x1 = np.round(boxes[0] * size).astype(int)
    inside = np.abs(image[y0:y1, x0:x1].astype(np.float32) - background[y0:y1, x0:x1])
    changed = inside.max(axis=-1) > 30
    # Every shape fills at least ~half its box; distractors may hide up to 40% of it.
    assert changed.mean() > 0.3
    # Outside every box the image is the background.
    outside = np.ones((size, size), dtype=bool)
    for box in np.round(boxes * size).astype(int):
        outside[box[0] : box[2], box[1] : box[3]] = False
    assert np.array_equal(image[outside], background[outside].astype(np.uint8))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="Received: index=-1"):
        make_synthetic_scene(-1)
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic_scene(0, image_size=8)


def test_dataset_images():
    dataset = synthetic_dataset(num_images=6, image_size=32, seed=3)
    images = np.stack([image.numpy() for image in dataset])
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    expected = make_synthetic_scene(4, image_size=32, seed=3)[0]
    np.testing.assert_array_equal(images[4], expected.astype(np.float32))


def test_dataset_with_targets_padded_with_count():
    dataset = synthetic_dataset(num_images=8, image_size=32, seed=0, with_targets=True)
    for index, element in enumerate(dataset):
        _, boxes, labels = make_synthetic_scene(index, image_size=32, seed=0)
        k = int(element["num_objects"])
        assert k == len(labels)
        assert element["boxes"].shape == (synthetic.MAX_OBJECTS, 4)
        np.testing.assert_allclose(element["boxes"].numpy()[:k], boxes)
        np.testing.assert_array_equal(element["labels"].numpy()[:k], labels)
        assert np.all(element["labels"].numpy()[k:] == -1)
