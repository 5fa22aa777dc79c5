"""Synthetic twin: scene sanity, round trip through read_nyu, worker determinism, atomic writes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from depthtune.data.nyu import read_nyu
from depthtune.data.nyu_writer import CLASS_NAMES, FRAME_SHAPE, write_nyu_file
from depthtune.data.synth import MAX_DEPTH, MIN_DEPTH, generate_dataset


def _text(h5: h5py.File, ref) -> str:
    """Decode a MATLAB char dataset behind an object reference."""
    return h5[ref][()].ravel().astype(np.uint16).tobytes().decode("utf-16-le")


def _contents(path: Path) -> dict[str, object]:
    """Every array and every referenced string of a written file, for comparing two files."""
    with h5py.File(path, "r") as h5:
        out: dict[str, object] = {k: h5[k][()] for k in ("images", "depths", "rawDepths", "labels", "instances")}
        for key in ("names", "scenes"):
            out[key] = [_text(h5, ref) for ref in h5[key][0]]
    return out


def _frame(path: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and depth of the one frame of a dataset generated with ``seed``, as read_nyu reads them."""
    arrays = read_nyu(generate_dataset(path, 1, seed=seed))
    return arrays.images[0], arrays.depths[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[np.ndarray, np.ndarray, dict[str, np.dtype]]:
    path = tmp_path_factory.mktemp("scene") / "one.mat"
    image, depth = _frame(path, seed=0)
    with h5py.File(path, "r") as h5:
        stored = {key: h5[key].dtype for key in ("images", "depths")}
    return image, depth, stored


def test_scene_is_plausible(scene):
    image, depth, stored = scene
    assert stored == {"images": np.uint8, "depths": np.float32}  # NYU stores depth as MATLAB single
    assert image.shape == (*FRAME_SHAPE, 3) and depth.shape == FRAME_SHAPE
    valid = depth > 0
    assert np.all((depth[valid] >= MIN_DEPTH) & (depth[valid] <= MAX_DEPTH))
    assert 0.003 < 1 - valid.mean() < 0.1
    assert depth[valid].std() > 0.3
    assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 1000


def test_frames_depend_only_on_the_seed(tmp_path):
    a = _frame(tmp_path / "a.mat", seed=5)
    b = _frame(tmp_path / "b.mat", seed=5)
    c = _frame(tmp_path / "c.mat", seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_generate_round_trips_through_read_nyu(tmp_path):
    calls: list[tuple[int, int]] = []
    out = generate_dataset(
        tmp_path / "synth.mat", 3, views_per_room=2, seed=3, progress=lambda done, total: calls.append((done, total))
    )
    assert out == tmp_path / "synth.mat"
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert out.read_bytes()[:6] == b"MATLAB"
    arrays = read_nyu(out)
    assert len(arrays) == 3
    assert arrays.scenes == ("synth_s3_room00000", "synth_s3_room00000", "synth_s3_room00001")
    contents = _contents(out)
    assert contents["names"] == list(CLASS_NAMES)
    assert contents["scenes"] == list(arrays.scenes)
    labels, raw = contents["labels"], contents["rawDepths"]
    assert labels.shape == (3, 640, 480) and labels.dtype == np.uint16
    assert 1 <= labels.min() and labels.max() <= len(CLASS_NAMES)
    assert (raw == 0).mean() > (contents["depths"] == 0).mean()
    assert [p.name for p in tmp_path.iterdir()] == ["synth.mat"]


def test_views_of_a_room_are_different_frames_of_the_same_room(tmp_path):
    arrays = read_nyu(generate_dataset(tmp_path / "rooms.mat", 4, views_per_room=2, seed=5))
    longer = read_nyu(generate_dataset(tmp_path / "longer.mat", 6, views_per_room=2, seed=5))
    np.testing.assert_array_equal(arrays.images, longer.images[:4])  # a frame depends on (seed, index, views) only
    assert not np.array_equal(arrays.images[0], arrays.images[1])
    assert arrays.scenes[0] == arrays.scenes[1] != arrays.scenes[2] == arrays.scenes[3]


def test_workers_give_identical_files(tmp_path):
    one = _contents(generate_dataset(tmp_path / "w1.mat", 4, seed=9, workers=1))
    two = _contents(generate_dataset(tmp_path / "w2.mat", 4, seed=9, workers=2))
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def test_crash_leaves_no_file(tmp_path):
    def fail(done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        generate_dataset(tmp_path / "crash.mat", 3, progress=fail)
    assert list(tmp_path.iterdir()) == []


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n=0; expected at least 1 frame"):
        generate_dataset(tmp_path / "x.mat", 0)
    with pytest.raises(ValueError, match="workers=0; expected at least 1"):
        generate_dataset(tmp_path / "x.mat", 1, workers=0)
    with pytest.raises(FileNotFoundError, match="directory .*missing does not exist"):
        generate_dataset(tmp_path / "missing" / "x.mat", 1)
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        generate_dataset(tmp_path, 1)


def test_write_nyu_file_checks_shapes(tmp_path):
    images = np.zeros((1, *FRAME_SHAPE, 3), np.uint8)
    with pytest.raises(ValueError, match=r"images are uint8 \(1, 240, 320, 3\)"):
        write_nyu_file(tmp_path / "a.mat", np.zeros((1, 240, 320, 3), np.uint8), np.ones((1, 240, 320)))
    with pytest.raises(ValueError, match=r"depths have shape \(2, 480, 640\); expected \(1, 480, 640\)"):
        write_nyu_file(tmp_path / "a.mat", images, np.ones((2, *FRAME_SHAPE)))
    assert not (tmp_path / "a.mat").exists()
