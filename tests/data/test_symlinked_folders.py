"""Symlinked sub-folders of an image folder are searched, and link loops end."""

import os

from bad_files import good_jpeg

from ssl_keras.data import image_files
from ssl_keras.data.unlabeled_images import load_image_source


def test_a_symlinked_subfolder_is_searched(tmp_path):
    elsewhere = tmp_path / "other_drive" / "holiday"
    elsewhere.mkdir(parents=True)
    linked = [good_jpeg(elsewhere, name=f"{i}.jpg", seed=i) for i in range(32)]
    photos = tmp_path / "photos"
    photos.mkdir()
    good_jpeg(photos, name="top.jpg")
    os.symlink(elsewhere, photos / "holiday")
    found = image_files.list_image_files(photos)
    assert len(found) == 33
    assert {os.path.basename(p) for p in found} >= {os.path.basename(p) for p in linked}
    source = load_image_source(str(photos), image_size=16, batch_size=8)
    assert source.num_images == 33


def test_symlink_loops_end_and_each_folder_is_listed_once(tmp_path):
    photos = tmp_path / "photos"
    (photos / "a" / "b").mkdir(parents=True)
    good_jpeg(photos, name="top.jpg")
    good_jpeg(photos / "a", name="in_a.jpg")
    good_jpeg(photos / "a" / "b", name="in_b.jpg")
    os.symlink(photos, photos / "a" / "b" / "back_to_top")  # A loop.
    os.symlink(photos / "a", photos / "also_a")  # A second path to a folder walked anyway.
    os.symlink(tmp_path / "nowhere", photos / "dangling")  # A broken link.
    found = image_files.list_image_files(photos)
    assert sorted(os.path.relpath(p, photos) for p in found) == [
        os.path.join("a", "b", "in_b.jpg"),
        os.path.join("a", "in_a.jpg"),
        "top.jpg",
    ]


def test_two_folders_linking_to_each_other_end(tmp_path):
    photos = tmp_path / "photos"
    (photos / "x").mkdir(parents=True)
    (photos / "y").mkdir()
    good_jpeg(photos / "x", name="x.jpg")
    good_jpeg(photos / "y", name="y.jpg")
    os.symlink(photos / "y", photos / "x" / "to_y")
    os.symlink(photos / "x", photos / "y" / "to_x")
    found = image_files.list_image_files(photos)
    assert sorted(os.path.basename(p) for p in found) == ["x.jpg", "y.jpg"]
