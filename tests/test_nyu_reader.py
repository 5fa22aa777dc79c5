"""read_nyu: layout and orientation of the labelled file, memory use, and every error it reports."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from depthtune.data.nyu import NYUArrays, NYUFormatError, read_nyu, read_nyu_scenes
from depthtune.data.nyu_writer import write_nyu_file

H, W = 480, 640


def _patterned(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images and depths whose values encode (frame, row, column, channel): any flip shows."""
    r = np.arange(H)[None, :, None]
    c = np.arange(W)[None, None, :]
    i = np.arange(n)[:, None, None]
    base = (r + 3 * c + 11 * i) % 256
    images = np.stack([base, (base + 80) % 256, (2 * r + i) % 256 + 0 * c], axis=-1)
    depths = (1.0 + r / H + 2.0 * c / W + i).astype(np.float32)
    return images.astype(np.uint8), depths


def _h5(path: Path, **datasets: np.ndarray) -> Path:
    """Plain HDF5 file holding the given datasets (for files the writer refuses to make)."""
    with h5py.File(path, "w") as h5:
        for key, value in datasets.items():
            h5.create_dataset(key, data=value)
    return path


def _h5_images(n: int) -> np.ndarray:
    return np.zeros((n, 3, W, H), np.uint8)


def _h5_depths(n: int, dtype=np.float32) -> np.ndarray:
    return np.ones((n, W, H), dtype)


@pytest.fixture(scope="module")
def patterned_file(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    path = tmp_path_factory.mktemp("nyu") / "labelled.mat"
    images, depths = _patterned(3)
    write_nyu_file(path, images, depths, scenes=["kitchen_0001", "office_0002", "bedroom_0003"])
    return path, images, depths


def test_reads_unrotated_unflipped_across_blocks(patterned_file):
    path, images, depths = patterned_file
    arrays = read_nyu(path, block_size=2)
    assert isinstance(arrays, NYUArrays)
    assert len(arrays) == 3
    assert arrays.images.shape == (3, H, W, 3) and arrays.images.dtype == np.uint8
    assert arrays.depths.shape == (3, H, W) and arrays.depths.dtype == np.float32
    assert arrays.images.flags.c_contiguous and arrays.depths.flags.c_contiguous
    np.testing.assert_array_equal(arrays.images, images)
    np.testing.assert_array_equal(arrays.depths, depths)
    assert arrays.source == str(path)
    assert arrays.scenes == ("kitchen_0001", "office_0002", "bedroom_0003")
    assert read_nyu_scenes(path) == arrays.scenes


def test_a_file_without_scenes_gets_one_scene_per_frame_and_a_warning(patterned_file, tmp_path, caplog):
    path, _, _ = patterned_file
    copy = tmp_path / "noscenes.mat"
    copy.write_bytes(path.read_bytes())
    with h5py.File(copy, "a") as h5:
        del h5["scenes"]
    assert read_nyu(copy).scenes == ("frame_00000", "frame_00001", "frame_00002")
    assert "has no 'scenes' cell array: every frame is taken as its own scene" in caplog.text


def test_a_scenes_array_of_the_wrong_length_is_refused(patterned_file, tmp_path):
    path, _, _ = patterned_file
    copy = tmp_path / "short.mat"
    copy.write_bytes(path.read_bytes())
    with h5py.File(copy, "a") as h5:
        refs = h5["scenes"][0, :2]
        del h5["scenes"]
        cell = h5.create_dataset("scenes", shape=(1, 2), dtype=h5py.ref_dtype)
        cell[0, :] = refs
    with pytest.raises(
        NYUFormatError, match="key 'scenes' is object of shape \\(1, 2\\); expected a cell array of 3 scene names"
    ):
        read_nyu(copy)


def test_file_layout_matches_the_real_labelled_file(patterned_file):
    path, images, depths = patterned_file
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as h5:
        assert h5["images"].shape == (3, 3, W, H)
        assert h5["depths"].shape == (3, W, H)
        assert h5.userblock_size == 512
        np.testing.assert_array_equal(h5["images"][1, 0, 5, 7], images[1, 7, 5, 0])
        assert h5["depths"][2, 600, 10] == depths[2, 10, 600]
        for key in ("rawDepths", "labels", "instances", "names", "scenes", "#refs#"):
            assert key in h5
        scene = h5[h5["scenes"][0, 1]][()]
        assert scene.ravel().astype(np.uint16).tobytes().decode("utf-16-le") == "office_0002"
        assert h5["scenes"].attrs["MATLAB_class"] == b"cell"


def test_extra_keys_and_reference_cells_are_ignored(patterned_file, tmp_path):
    path, images, depths = patterned_file
    copy = tmp_path / "extra.mat"
    copy.write_bytes(path.read_bytes())
    with h5py.File(copy, "a") as h5:
        sub = h5.create_group("#subsystem#")
        sub.create_dataset("MCOS", data=np.arange(6, dtype=np.uint32))
        types = h5.create_dataset("sceneTypes", shape=(1, 3), dtype=h5py.ref_dtype)
        types[0, 0] = h5["#refs#"][sorted(h5["#refs#"])[0]].ref
        h5.create_dataset("namesToIds", data=np.zeros((1, 1), np.uint8))
    arrays = read_nyu(copy)
    np.testing.assert_array_equal(arrays.images, images)
    np.testing.assert_array_equal(arrays.depths, depths)


def test_float64_depths_are_cast_to_float32(tmp_path):
    depths = np.full((2, W, H), 2.5, np.float64)
    arrays = read_nyu(_h5(tmp_path / "f64.mat", images=_h5_images(2), depths=depths))
    assert arrays.depths.dtype == np.float32
    assert np.all(arrays.depths == 2.5)


def test_peak_memory_is_output_plus_one_block(tmp_path):
    n = 6
    images, depths = _patterned(n)
    path = write_nyu_file(tmp_path / "mem.mat", images, depths)
    del images, depths
    output = n * H * W * (3 + 4)
    block = H * W * (3 + 4)
    tracemalloc.start()
    try:
        arrays = read_nyu(path, block_size=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(arrays) == n
    assert peak < output + 2 * block, f"peak {peak / 1e6:.1f} MB for output {output / 1e6:.1f} MB"


def test_logs_what_it_read(patterned_file, caplog):
    with caplog.at_level(logging.INFO, logger="depthtune.data.nyu"):
        read_nyu(patterned_file[0])
    assert "read 3 NYU frames" in caplog.text


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.mat"
    with pytest.raises(FileNotFoundError, match="nowhere.mat"):
        read_nyu(path)


def test_directory(tmp_path):
    with pytest.raises(NYUFormatError, match="is a directory"):
        read_nyu(tmp_path)


def test_text_file_is_not_hdf5(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("these are not depth maps\n")
    with pytest.raises(NYUFormatError, match="notes.mat is not an HDF5 file"):
        read_nyu(path)


def test_old_mat_v5_file(tmp_path):
    path = tmp_path / "old.mat"
    scipy.io.savemat(path, {"images": np.zeros((2, 2), np.uint8)})
    with pytest.raises(NYUFormatError, match=r"old.mat is an older MAT-file .*MATLAB 5.0.*v7.3"):
        read_nyu(path)


def test_truncated_file(patterned_file, tmp_path):
    path = tmp_path / "cut.mat"
    data = patterned_file[0].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(NYUFormatError, match="cut.mat"):
        read_nyu(path)


@pytest.mark.parametrize("missing", ["images", "depths"])
def test_missing_key(tmp_path, missing):
    datasets = {"images": _h5_images(1), "depths": _h5_depths(1), "labels": np.zeros((1, W, H))}
    del datasets[missing]
    path = _h5(tmp_path / "partial.mat", **datasets)
    with pytest.raises(NYUFormatError, match=rf"partial.mat: key '{missing}' is missing \(found"):
        read_nyu(path)


def test_key_that_is_a_group(tmp_path):
    path = tmp_path / "group.mat"
    with h5py.File(path, "w") as h5:
        h5.create_group("images")
        h5.create_dataset("depths", data=_h5_depths(1))
    with pytest.raises(NYUFormatError, match="key 'images' is a Group, expected a dataset"):
        read_nyu(path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("images", np.zeros((1, H, W, 3), np.uint8), r"\(1, 480, 640, 3\); expected \(N, 3, 640, 480\)"),
        ("images", np.zeros((1, 3, 320, 240), np.uint8), r"\(1, 3, 320, 240\); expected \(N, 3, 640, 480\)"),
        ("images", np.zeros((3, W, H), np.uint8), r"\(3, 640, 480\); expected \(N, 3, 640, 480\)"),
        ("depths", np.ones((1, H, W), np.float32), r"\(1, 480, 640\); expected \(N, 640, 480\)"),
        ("depths", np.ones((1, 1, W, H), np.float32), r"\(1, 1, 640, 480\); expected \(N, 640, 480\)"),
    ],
)
def test_wrong_shape(tmp_path, key, value, expected):
    datasets = {"images": _h5_images(1), "depths": _h5_depths(1), key: value}
    path = _h5(tmp_path / "shape.mat", **datasets)
    with pytest.raises(NYUFormatError, match=rf"shape.mat: key '{key}' has shape {expected}"):
        read_nyu(path)


def test_images_must_be_uint8(tmp_path):
    path = _h5(tmp_path / "dt.mat", images=_h5_images(1).astype(np.float32), depths=_h5_depths(1))
    with pytest.raises(NYUFormatError, match="dt.mat: key 'images' has dtype float32; expected uint8"):
        read_nyu(path)


def test_depths_must_be_float(tmp_path):
    path = _h5(tmp_path / "dt.mat", images=_h5_images(1), depths=_h5_depths(1, np.uint16))
    with pytest.raises(NYUFormatError, match="dt.mat: key 'depths' has dtype uint16; expected a float"):
        read_nyu(path)


def test_frame_counts_must_match(tmp_path):
    path = _h5(tmp_path / "n.mat", images=_h5_images(2), depths=_h5_depths(3))
    with pytest.raises(NYUFormatError, match="n.mat: key 'images' holds 2 frames but 'depths' holds 3"):
        read_nyu(path)


def test_no_frames(tmp_path):
    path = _h5(tmp_path / "empty.mat", images=_h5_images(0), depths=_h5_depths(0))
    with pytest.raises(NYUFormatError, match="empty.mat: keys 'images' and 'depths' hold 0 frames"):
        read_nyu(path)


def test_block_size_must_be_positive(patterned_file):
    with pytest.raises(ValueError, match="block_size=0"):
        read_nyu(patterned_file[0], block_size=0)
