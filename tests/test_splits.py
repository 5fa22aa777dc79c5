"""make_splits: seeded random splits and NYU's splits.mat, both by whole scenes, and every error they report."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from depthtune.data.splits import Splits, make_splits


def _frames(n: int) -> list[str]:
    """Scene names of ``n`` frames that are each their own scene."""
    return [f"frame_{i}" for i in range(n)]


def _rooms(sizes: list[int]) -> list[str]:
    """Scene names of consecutive frames taken in rooms of the given sizes."""
    return [f"room_{r}" for r, size in enumerate(sizes) for _ in range(size)]


def _check_partition(splits: Splits, n: int) -> None:
    """Sorted int64 indices, pairwise disjoint, covering 0..n-1 exactly once."""
    parts = [splits.train, splits.val, splits.test]
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def _splits_mat(path: Path, train: np.ndarray, test: np.ndarray) -> Path:
    """NYU-style splits.mat: 1-based column vectors, as MATLAB saves them."""
    scipy.io.savemat(
        path,
        {
            "trainNdxs": np.asarray(train).reshape(-1, 1).astype(np.float64),
            "testNdxs": np.asarray(test).reshape(-1, 1).astype(np.float64),
        },
    )
    return path


@pytest.fixture
def nyu_like(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """splits.mat with NYU's sizes: 795 train and 654 test frames out of 1449."""
    perm = np.random.default_rng(7).permutation(1449) + 1
    train, test = perm[:795], perm[795:]
    return _splits_mat(tmp_path / "splits.mat", train, test), train, test


@pytest.mark.parametrize(("n", "sizes"), [(100, (80, 10, 10)), (1449, (1159, 145, 145)), (10, (8, 1, 1))])
def test_random_default_is_80_10_10(n, sizes):
    splits = make_splits(_frames(n))
    assert (splits.train.size, splits.val.size, splits.test.size) == sizes
    _check_partition(splits, n)
    assert splits.source == "random by scene(seed=0, val=0.1, test=0.1)"


def test_random_is_deterministic_per_seed():
    a, b, c = make_splits(_frames(200), seed=3), make_splits(_frames(200), seed=3), make_splits(_frames(200), seed=4)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a.get(name), b.get(name))
    assert not np.array_equal(a.test, c.test)


def test_custom_fractions_and_zero_fraction():
    splits = make_splits(_frames(50), val_fraction=0.2, test_fraction=0.0)
    assert (splits.train.size, splits.val.size, splits.test.size) == (40, 10, 0)
    _check_partition(splits, 50)


def test_positive_fraction_gives_at_least_one_frame():
    splits = make_splits(_frames(4), val_fraction=0.05, test_fraction=0.05)
    assert (splits.train.size, splits.val.size, splits.test.size) == (2, 1, 1)


def test_get_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown split 'validation'; expected one of train, val, test"):
        make_splits(_frames(10)).get("validation")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": -0.1}, r"val_fraction=-0.1; expected a fraction in \[0, 1\)"),
        ({"test_fraction": 1.0}, r"test_fraction=1.0; expected a fraction in \[0, 1\)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "sum below 1"),
    ],
)
def test_bad_fractions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_splits(_frames(100), **kwargs)


def test_too_few_frames():
    with pytest.raises(
        ValueError, match="n=2 frames in 2 scenes are too few for val_fraction=0.1 and test_fraction=0.1"
    ):
        make_splits(_frames(2))


def test_official_splits(nyu_like):
    path, train, test = nyu_like
    splits = make_splits(_frames(1449), splits_file=path)
    np.testing.assert_array_equal(splits.test, np.sort(test - 1))
    np.testing.assert_array_equal(np.sort(np.concatenate([splits.train, splits.val])), np.sort(train - 1))
    assert splits.val.size == 80 and splits.train.size == 715
    _check_partition(splits, 1449)
    assert splits.source.startswith(f"splits.mat:{path}")
    again = make_splits(_frames(1449), splits_file=path)
    np.testing.assert_array_equal(splits.val, again.val)
    other = make_splits(_frames(1449), splits_file=path, seed=1)
    assert not np.array_equal(splits.val, other.val)


def test_official_splits_with_integer_row_vectors(tmp_path):
    path = tmp_path / "rows.mat"
    scipy.io.savemat(
        path, {"trainNdxs": np.arange(1, 9, dtype=np.uint16)[None], "testNdxs": np.array([[9, 10]], np.uint16)}
    )
    splits = make_splits(_frames(10), splits_file=path, val_fraction=0.25)
    assert (splits.train.size, splits.val.size) == (6, 2)
    np.testing.assert_array_equal(splits.test, [8, 9])


def test_splits_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="splits file .*absent.mat does not exist"):
        make_splits(_frames(10), splits_file=tmp_path / "absent.mat")


def test_splits_file_not_a_mat_file(tmp_path):
    path = tmp_path / "splits.mat"
    path.write_text("trainNdxs = 1:795\n")
    with pytest.raises(ValueError, match="splits.mat is not a readable MAT file"):
        make_splits(_frames(10), splits_file=path)


def test_splits_file_in_v73_format(tmp_path):
    path = tmp_path / "splits73.mat"
    with h5py.File(path, "w", userblock_size=512) as h5:
        h5.create_dataset("trainNdxs", data=np.arange(1, 5, dtype=np.float64))
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file".ljust(116) + b" " * 8 + b"\x00\x02IM")
    with pytest.raises(ValueError, match=r"splits73.mat is a MATLAB v7.3 \(HDF5\) file"):
        make_splits(_frames(10), splits_file=path)


def test_splits_file_missing_key(tmp_path):
    path = tmp_path / "half.mat"
    scipy.io.savemat(path, {"trainNdxs": np.arange(1, 5).reshape(-1, 1)})
    with pytest.raises(ValueError, match=r"half.mat: key 'testNdxs' is missing \(found \['trainNdxs'\]\)"):
        make_splits(_frames(10), splits_file=path)


def test_splits_file_index_below_one(tmp_path):
    path = _splits_mat(tmp_path / "zero.mat", [0, 1, 2], [3, 4])
    with pytest.raises(ValueError, match="zero.mat: key 'trainNdxs' has index 0; expected 1-based"):
        make_splits(_frames(10), splits_file=path)


def test_splits_file_larger_than_data(tmp_path):
    path = _splits_mat(tmp_path / "big.mat", np.arange(1, 796), np.arange(796, 1450))
    with pytest.raises(
        ValueError,
        match=r"big.mat: key 'testNdxs' has index 1449 but the data "
        r"holds n=1000 frames: split larger than the data",
    ):
        make_splits(_frames(1000), splits_file=path)


def test_splits_file_overlap(tmp_path):
    path = _splits_mat(tmp_path / "overlap.mat", [1, 2, 3, 4], [4, 5])
    with pytest.raises(
        ValueError,
        match=r"overlap.mat: 'trainNdxs' and 'testNdxs' share 1 frames "
        r"\(1-based, first \[4\]\)",
    ):
        make_splits(_frames(10), splits_file=path)


def test_splits_file_duplicates(tmp_path):
    path = _splits_mat(tmp_path / "dup.mat", [1, 2, 2, 3], [5])
    with pytest.raises(ValueError, match="dup.mat: key 'trainNdxs' lists 1 frames more than once"):
        make_splits(_frames(10), splits_file=path)


def test_splits_file_non_integer(tmp_path):
    path = _splits_mat(tmp_path / "frac.mat", [1.5, 2, 3], [5])
    with pytest.raises(ValueError, match="frac.mat: key 'trainNdxs' holds float64 values"):
        make_splits(_frames(10), splits_file=path)


def _scene_sets(splits: Splits, scenes: list[str]) -> dict[str, set[str]]:
    return {name: {scenes[i] for i in splits.get(name)} for name in ("train", "val", "test")}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_split_keeps_every_scene_on_one_side(seed):
    sizes = list(np.random.default_rng(seed).integers(1, 7, size=120))
    scenes = _rooms(sizes)
    splits = make_splits(scenes, seed=seed)
    _check_partition(splits, len(scenes))
    sets = _scene_sets(splits, scenes)
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    # whole scenes are drawn until each held-out split has its share of the frames; the last scene
    # drawn into a split overshoots its share by less than that scene's size
    for name, fraction in (("test", 0.1), ("val", 0.1)):
        wanted = int(np.floor(fraction * len(scenes) + 0.5))
        assert wanted <= splits.get(name).size < wanted + max(sizes)
    assert splits.source == f"random by scene(seed={seed}, val=0.1, test=0.1)"
    again = make_splits(scenes, seed=seed)
    np.testing.assert_array_equal(splits.val, again.val)


def test_official_split_draws_validation_scenes_from_the_training_frames(tmp_path):
    scenes = _rooms([3] * 100)  # 300 frames of 100 rooms; test = rooms 70..99
    path = _splits_mat(tmp_path / "splits.mat", np.arange(1, 211), np.arange(211, 301))
    splits = make_splits(scenes, splits_file=path, val_fraction=0.2)
    _check_partition(splits, 300)
    np.testing.assert_array_equal(splits.test, np.arange(210, 300))
    sets = _scene_sets(splits, scenes)
    assert not (sets["train"] & sets["val"]) and not (sets["val"] & sets["test"])
    assert splits.val.size == 42 and len(sets["val"]) == 14
    other = make_splits(scenes, splits_file=path, val_fraction=0.2, seed=1)
    assert sets["val"] != _scene_sets(other, scenes)["val"]


def test_official_split_sharing_a_scene_between_train_and_test_is_reported(tmp_path, caplog):
    scenes = _rooms([2, 2, 2, 2, 2])
    path = _splits_mat(tmp_path / "splits.mat", [1, 2, 3, 4, 5, 6, 7], [8, 9, 10])
    make_splits(scenes, splits_file=path, val_fraction=0.2)
    assert "1 scenes have frames in both trainNdxs and testNdxs (first ['room_3'])" in caplog.text


def test_a_split_too_coarse_for_its_fractions_is_refused():
    with pytest.raises(ValueError, match="6 frames in 2 scenes are too few"):
        make_splits(_rooms([3, 3]))


def test_describe_lists_frames_and_scenes_per_split():
    scenes = _rooms([2, 3, 1, 4, 2, 3, 2, 3])
    splits = make_splits(scenes, val_fraction=0.2, test_fraction=0.2)
    described = splits.describe(scenes)
    assert described["source"] == splits.source
    for name in ("train", "val", "test"):
        part = described[name]
        assert part["indices"] == splits.get(name).tolist()
        assert part["scene_names"] == sorted({scenes[i] for i in splits.get(name)})
        assert (part["frames"], part["scenes"]) == (len(part["indices"]), len(part["scene_names"]))
