import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from ssl_keras.backbone import tiny_backbone
from ssl_keras.localization.box_regressor import BoxRegressor
from ssl_keras.data.localization import load_localization_data
from ssl_keras.data.synthetic import SYNTHETIC_CLASSES
from ssl_keras.localization.detect import load_run
from ssl_keras.gradcam.gradcam import (
    GradCAM,
    GradCAMError,
    box_area_share,
    gradcam_across_backbones,
    gradcam_mass_summary,
    inbox_mass,
)

DATA = "synthetic:40"  # 70/15/15: test = scenes 34..39


def supersampled_mass(heatmap, box, factor):
    """Slow transcription: each pixel split into factor x factor equal sub-pixels, the box's
    edges on the sub-pixel grid, so plain slicing counts covered area exactly."""
    fine = np.kron(heatmap, np.ones((factor, factor)))
    y0, x0, y1, x1 = np.round(np.asarray(box) * np.array(fine.shape * 2)).astype(int)
    return fine[y0:y1, x0:x1].sum() / fine.sum()


def test_uniform_map_gets_exactly_the_box_area_share():
    for box in ([0.13, 0.07, 0.71, 0.94], [0.0, 0.0, 1.0, 1.0], [0.31, 0.52, 0.33, 0.58]):
        expected = (box[2] - box[0]) * (box[3] - box[1])
        assert box_area_share(box) == pytest.approx(expected, abs=1e-12)
        # The box's edges cut pixels of the 10 x 8 map: only covered area counts.
        assert inbox_mass(np.full((10, 8), 3.7), box) == pytest.approx(expected, abs=1e-12)
    # A box reaching past the image counts only its part inside.
    assert box_area_share([-0.2, 0.5, 0.4, 1.3]) == pytest.approx(0.2)
    assert inbox_mass(np.ones((7, 9)), [-0.2, 0.5, 0.4, 1.3]) == pytest.approx(0.2, abs=1e-12)
    np.testing.assert_allclose(
        box_area_share([[0.0, 0.0, 0.5, 0.5], [0.1, 0.2, 0.3, 0.7]]), [0.25, 0.1]
    )


def test_partially_covered_pixels_count_by_covered_area():
    heatmap = np.random.default_rng(0).uniform(0.0, 1.0, (6, 5))
    for box in ([0.1, 0.15, 0.65, 0.9], [0.4, 0.0, 0.45, 0.35], [0.0, 0.61, 1.0, 0.62]):
        # Edges on multiples of 1/120 and 1/100: a 20x supersampling resolves them exactly.
        assert inbox_mass(heatmap, box) == pytest.approx(
            supersampled_mass(heatmap, box, 20), abs=1e-12
        )


def test_map_inside_a_pixel_aligned_box_has_mass_one_and_outside_zero():
    heatmap = np.zeros((8, 10))
    heatmap[2:5, 1:7] = np.random.default_rng(1).uniform(0.1, 1.0, (3, 6))
    box = [2 / 8, 1 / 10, 5 / 8, 7 / 10]
    assert inbox_mass(heatmap, box) == 1.0
    outside = 1.0 - (heatmap > 0)  # all the mass off the object
    assert inbox_mass(outside, box) == 0.0
    # One pixel row fewer: the share of the mass in rows 2..3 only.
    assert inbox_mass(heatmap, [2 / 8, 1 / 10, 4 / 8, 7 / 10]) == pytest.approx(
        heatmap[2:4].sum() / heatmap.sum()
    )


def test_batched_form_matches_single_maps_and_gives_nan_for_an_empty_map():
    rng = np.random.default_rng(2)
    heatmaps = rng.uniform(0.0, 1.0, (4, 6, 6))
    heatmaps[2] = 0.0
    boxes = np.array(
        [[0.1, 0.1, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.4, 0.4], [0.55, 0.3, 0.95, 0.35]]
    )
    masses = inbox_mass(heatmaps, boxes)
    assert masses.shape == (4,)
    assert masses[1] == pytest.approx(1.0) and np.isnan(masses[2])
    for i in (0, 1, 3):
        assert masses[i] == pytest.approx(inbox_mass(heatmaps[i], boxes[i]), abs=1e-12)
    assert np.isnan(inbox_mass(np.zeros((3, 3)), [0.0, 0.0, 0.5, 0.5]))


def test_bad_inputs_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="non-negative"):
        inbox_mass(-np.ones((3, 3)), [0.0, 0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        inbox_mass(np.ones((2, 3, 3)), [0.0, 0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="xmin <= xmax"):
        box_area_share([0.0, 0.6, 0.5, 0.5])
    with pytest.raises(ValueError, match="finite"):
        inbox_mass(np.full((3, 3), np.nan), [0.0, 0.0, 0.5, 0.5])


def detect_run(run_dir, *, image_size, resize, seed, zero_class_kernel=False):
    """A saved tiny BoxRegressor with the config.json fields a detect run has for Grad-CAM."""
    keras.utils.set_random_seed(seed)
    model = BoxRegressor(
        tiny_backbone(width=4),
        num_classes=len(SYNTHETIC_CLASSES),
        augmenter=None,
        hidden_units=0 if zero_class_kernel else 8,
        dropout=0.0,
    )
    model(np.zeros((1, image_size, image_size, 3), "float32"))
    if zero_class_kernel:  # no class evidence anywhere: every class map is all zero
        model.head.class_output.kernel.assign(
            np.zeros(model.head.class_output.kernel.shape, "float32")
        )
    os.makedirs(run_dir)
    model.save(os.path.join(run_dir, "model.keras"))
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(
            {
                "options": {
                    "image_size": image_size,
                    "resize": resize,
                    "data": DATA,
                    "batch_size": 4,
                },
                "resolved": {"class_names": list(SYNTHETIC_CLASSES)},
            },
            f,
        )
    return str(run_dir)


def expected_masses(run_dir, target):
    """In-box masses recomputed by hand: the test split in the run's frame, Grad-CAM, inbox_mass."""
    model, record = load_run(run_dir)
    options = record["options"]
    test = load_localization_data(
        DATA,
        image_size=options["image_size"],
        batch_size=64,
        resize=options["resize"],
        splits=("test",),
    )
    images, truth = next(test.test.as_numpy_iterator())
    return inbox_mass(
        GradCAM(model).explain(images, target=target)["heatmaps"], truth["boxes"]
    ), truth["boxes"]


@pytest.mark.large
def test_across_backbones_writes_grids_and_the_same_images_in_every_column(tmp_path):
    models = {
        "tiny A": detect_run(tmp_path / "run_a", image_size=32, resize="stretch", seed=0),
        "tiny B": detect_run(tmp_path / "run_b", image_size=40, resize="letterbox", seed=1),
    }
    lines = []
    result = gradcam_across_backbones(
        models, data=DATA, out_dir=tmp_path / "cams", num_images=3, log=lines.append, batch_size=4
    )
    out = tmp_path / "cams"
    assert sorted(os.listdir(out)) == ["gradcam_box.png", "gradcam_class.png", "gradcam_mass.json"]
    assert set(result) == {"grids", "mass", "box_share", "images", "json"}
    assert result["grids"] == {t: str(out / f"gradcam_{t}.png") for t in ("box", "class")}
    for path in result["grids"].values():  # 3 rows x 2 columns of 1.6 in at 80 dpi
        assert np.asarray(Image.open(path)).shape[:2] == (408, 256)

    test_ids = load_localization_data(
        DATA, image_size=32, batch_size=8, splits=("test",)
    ).image_ids["test"]
    assert len(test_ids) == 6 and result["images"] == test_ids[:3]
    record = json.loads((out / "gradcam_mass.json").read_text())
    assert record["per_image"]["image_ids"] == test_ids  # mass_images=None: the whole test split
    assert record["models"] == models and record["layers"] == {"tiny A": "relu2", "tiny B": "relu2"}

    assert list(result["mass"]) == ["tiny A", "tiny B"]
    for title, run_dir in models.items():
        for target in ("box", "class"):
            row = result["mass"][title][target]
            assert set(row) == {"mean", "std", "n", "skipped", "box_share"}
            assert row["n"] + row["skipped"] == 6 and row["n"] > 0
            assert (
                0.0 <= row["mean"] <= 1.0
                and 0.0 <= row["std"] <= 0.5
                and 0.0 < row["box_share"] < 1.0
            )
            masses = record["per_image"]["mass"][title][target]
            assert all(m is None or 0.0 <= m <= 1.0 for m in masses)
            # The maps and boxes are those of the model's own input frame.
            expected, boxes = expected_masses(run_dir, target)
            np.testing.assert_allclose(
                [np.nan if m is None else m for m in masses], expected, atol=1e-4
            )
            assert row["mean"] == pytest.approx(np.nanmean(expected), abs=1e-6)
        assert record["model_box_share"][title]["mean"] == pytest.approx(
            box_area_share(boxes).mean()
        )
    # Under stretch the resized boxes are the original ones: the flat-map reference is their area share.
    original = load_localization_data(DATA, image_size=32, batch_size=8, splits=("test",)).targets[
        "test"
    ]["boxes"]
    assert result["box_share"] == {"mean": pytest.approx(box_area_share(original).mean()), "n": 6}
    assert any("tiny B: box in-box mass" in line for line in lines)


def test_mass_summary_counts_empty_maps_as_skipped(tmp_path):
    run_dir = detect_run(
        tmp_path / "run", image_size=32, resize="stretch", seed=0, zero_class_kernel=True
    )
    summary = gradcam_mass_summary(run_dir, num_images=4, explained_class="label", batch_size=3)
    assert summary["num_images"] == 4 and len(summary["image_ids"]) == 4 and summary["data"] == DATA
    assert summary["targets"]["class"] == {
        "mean": None,
        "std": None,
        "n": 0,
        "skipped": 4,
        "box_share": None,
    }
    assert np.isnan(summary["masses"]["class"]).all()
    box = summary["targets"]["box"]
    assert box["n"] == 4 and box["skipped"] == 0 and 0.0 <= box["mean"] <= 1.0
    assert box["box_share"] == pytest.approx(summary["box_share"]["mean"])
    np.testing.assert_allclose(
        summary["box_shares"],
        box_area_share(
            load_localization_data(DATA, image_size=32, batch_size=8, splits=("test",)).targets[
                "test"
            ]["boxes"][:4]
        ),
    )


def test_across_backbones_refuses_bad_arguments_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="non-empty mapping"):
        gradcam_across_backbones({}, data=DATA, out_dir=tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        gradcam_across_backbones({"x": tmp_path}, data=DATA, out_dir=tmp_path / "out")
    with pytest.raises(GradCAMError, match="targets"):
        gradcam_across_backbones(
            {"x": tmp_path}, data=DATA, out_dir=tmp_path / "out", targets=("boxes",)
        )
    with pytest.raises(ValueError, match="mass_images"):
        gradcam_across_backbones(
            {"x": tmp_path}, data=DATA, out_dir=tmp_path / "out", mass_images=0
        )
    assert not os.path.exists(tmp_path / "out")
