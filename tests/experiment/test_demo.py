"""The demo's pieces: its photo folder, its experiment file and its learning check."""

import os

from PIL import Image

from ssl_keras.data.synthetic import SYNTHETIC_CLASSES, make_synthetic_scene
from ssl_keras.experiment.demo import (
    DEFAULTS,
    LEARNING_BAR,
    PHOTO_OFFSET,
    demo_experiment_text,
    learning_check,
    write_demo_photos,
)
from ssl_keras.experiment.experiment import load_experiment


def test_demo_photos_are_unseen_scenes_filed_by_their_main_object_class(tmp_path):
    assert write_demo_photos(tmp_path, num_images=6, image_size=32) == 6
    files = sorted((p.parent.name, p.name) for p in tmp_path.rglob("*.png"))
    assert len(files) == 6
    for label, name in files:
        index = int(name[len("scene_") : -len(".png")])
        assert index >= PHOTO_OFFSET  # past every localization split
        image, _, labels = make_synthetic_scene(index, image_size=32)
        assert label == SYNTHETIC_CLASSES[int(labels[0])]
        assert Image.open(tmp_path / label / name).size == (32, 32)
    assert write_demo_photos(tmp_path, num_images=6, image_size=32) == 0  # kept, not rewritten


def test_demo_experiment_file_is_a_valid_miniature_of_the_paper_grid(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text(demo_experiment_text(str(tmp_path / "demo"), **DEFAULTS), encoding="utf-8")
    experiment = load_experiment(path)
    assert set(experiment.pretrain) == {"ssl", "supervised"}
    assert experiment.pretrain["supervised"].data == "folder:" + os.path.join(
        str(tmp_path / "demo"), "photos"
    )
    assert [label for label, _ in experiment.compare.labelled_backbones()] == [
        "ssl",
        "supervised",
        "scratch",
    ]
    assert experiment.compare.modes == [
        "freeze",
        "finetune",
    ] and experiment.compare.label_fractions == [0.25, 1.0]
    assert experiment.compare.backbone_name == DEFAULTS["backbone"]


def _summary(margins):
    rows = [
        dict(backbone=b, mode=m, label_fraction=f, mean_iou=0.45 + d, mean_iou_margin=d)
        for (b, m, f), d in margins.items()
    ]
    return {"compare": {"rows": rows}, "analysis": {"gradcam": {}}}


def test_learning_check_takes_the_best_cell_and_compares_it_with_the_bar():
    check = learning_check(
        _summary(
            {("ssl", "finetune", 1.0): LEARNING_BAR + 0.01, ("scratch", "finetune", 1.0): 0.02}
        )
    )
    assert check["passed"] and check["best"]["backbone"] == "ssl" and "PASSED" in check["lines"][0]
    check = learning_check(_summary({("ssl", "freeze", 1.0): LEARNING_BAR - 0.01}))
    assert not check["passed"] and "NOT MET" in check["lines"][0]
    assert not learning_check(_summary({}))["passed"]
