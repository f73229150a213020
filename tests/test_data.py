"""edgeq.data: samples from image folders, .npy/.npz files and Python iterables; labels."""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from edgeq.config.recipe import ChannelOrder, Layout, Preprocess
from edgeq.data import group_samples, iter_batches, load_image, load_labels, open_samples
from edgeq.errors import ConfigError, DataError
from edgeq.onnxutil import TensorSpec

F32 = np.dtype(np.float32)
NHWC = [TensorSpec("input", (1, 8, 8, 1), F32)]


def rng():
    return np.random.default_rng(1234)


# ------------------------------------------------------------------------------------------------ .npy


def test_npy_without_batch_axis_yields_full_shape(tmp_path):
    data = rng().random((5, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", data)
    samples = open_samples(tmp_path / "x.npy", inputs=NHWC)
    assert len(samples) == 5
    got = list(samples)
    assert len(got) == 5 and all(set(s) == {"input"} for s in got)
    assert all(s["input"].shape == (1, 8, 8, 1) and s["input"].dtype == np.float32 for s in got)
    np.testing.assert_array_equal(np.concatenate([s["input"] for s in got]), data)
    # Files are re-iterable.
    np.testing.assert_array_equal(next(iter(samples))["input"][0], data[0])


def test_npy_with_full_shape_and_limit(tmp_path):
    data = rng().random((6, 1, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", data)
    samples = open_samples(str(tmp_path / "x.npy"), inputs=NHWC, limit=4)
    assert len(samples) == 4
    got = [s["input"] for s in samples]
    assert len(got) == 4
    np.testing.assert_array_equal(np.stack(got), data[:4])


def test_shared_test_inputs_fit_the_shared_model():
    path = "/work/shared/models/digits_test_inputs.npy"
    samples = open_samples(path, inputs=NHWC, limit=3)
    first = next(iter(samples))["input"]
    np.testing.assert_array_equal(first[0], np.load(path, mmap_mode="r")[0])


def test_npy_fortran_order_is_read_correctly(tmp_path):
    data = np.asfortranarray(rng().random((4, 8, 8, 1), dtype=np.float32))
    np.save(tmp_path / "f.npy", data)
    got = np.concatenate([s["input"] for s in open_samples(tmp_path / "f.npy", inputs=NHWC)])
    np.testing.assert_array_equal(got, data)


def test_npy_wrong_shape(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(DataError) as e:
        open_samples(tmp_path / "x.npy", inputs=NHWC)
    msg = str(e.value)
    assert "x.npy" in msg and "(3, 8, 8)" in msg and "'input'" in msg and "(N, 8, 8, 1)" in msg


def test_npy_integer_data_for_float_input_is_refused(tmp_path):
    np.save(tmp_path / "u8.npy", np.zeros((3, 8, 8, 1), np.uint8))
    with pytest.raises(DataError, match=r"u8\.npy.*uint8 data given for float32 input 'input'.*scale"):
        open_samples(tmp_path / "u8.npy", inputs=NHWC)


def test_float64_is_converted_to_float32(tmp_path):
    data = rng().random((2, 8, 8, 1))  # float64
    np.save(tmp_path / "d.npy", data)
    got = [s["input"] for s in open_samples(tmp_path / "d.npy", inputs=NHWC)]
    assert got[0].dtype == np.float32
    np.testing.assert_array_equal(got[1][0], data[1].astype(np.float32))


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "Inf"), (1e300, "Inf")])
def test_non_finite_values_name_file_sample_and_input(tmp_path, bad, word):
    data = rng().random((5, 8, 8, 1))
    data[3, 2, 2, 0] = bad
    np.save(tmp_path / "bad.npy", data)
    samples = open_samples(tmp_path / "bad.npy", inputs=NHWC)
    it = iter(samples)
    for _ in range(3):
        next(it)
    with pytest.raises(DataError) as e:
        next(it)
    msg = str(e.value)
    assert "bad.npy" in msg and "sample 3" in msg and "'input'" in msg and word in msg


def test_pickled_npy_is_refused(tmp_path):
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, None]
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy.*Python objects.*refused"):
        open_samples(tmp_path / "obj.npy", inputs=NHWC)
    (tmp_path / "raw.npy").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"raw\.npy.*pickle.*refused"):
        open_samples(tmp_path / "raw.npy", inputs=NHWC)


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((10, 8, 8, 1), np.float32))
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:-100])
    with pytest.raises(DataError, match=r"t\.npy.*truncated"):
        open_samples(tmp_path / "t.npy", inputs=NHWC)


def test_npy_is_read_lazily(tmp_path):
    data = np.zeros((2000, 32, 32, 3), np.float32)  # 24 MB
    np.save(tmp_path / "big.npy", data)
    del data
    spec = [TensorSpec("x", (1, 32, 32, 3), F32)]
    tracemalloc.start()
    n = sum(1 for _ in open_samples(tmp_path / "big.npy", inputs=spec))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 2000
    assert peak < 1_000_000, f"iterating a 24 MB .npy allocated {peak} bytes at peak"


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_samples(tmp_path / "nope.npy", inputs=NHWC)
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError, match=r"unknown data file type '\.csv'"):
        open_samples(tmp_path / "x.csv", inputs=NHWC)


# ------------------------------------------------------------------------------------------------ .npz

TWO = [TensorSpec("a", (1, 4), F32), TensorSpec("b", (1, 2, 3), F32)]


def test_npz_one_array_per_input_and_labels_ignored(tmp_path):
    r = rng()
    a, b = r.random((7, 4), dtype=np.float32), r.random((7, 2, 3), dtype=np.float32)
    np.savez_compressed(tmp_path / "d.npz", a=a, b=b, labels=np.arange(7))
    samples = open_samples(tmp_path / "d.npz", inputs=TWO)
    assert len(samples) == 7
    got = list(samples)
    np.testing.assert_array_equal(np.concatenate([g["a"] for g in got]), a)
    np.testing.assert_array_equal(np.concatenate([g["b"] for g in got]), b)
    assert got[0]["b"].shape == (1, 2, 3)


def test_npz_single_array_any_name_for_single_input(tmp_path):
    x = rng().random((3, 8, 8, 1), dtype=np.float32)
    np.savez(tmp_path / "s.npz", images=x, labels=np.arange(3))
    got = np.concatenate([s["input"] for s in open_samples(tmp_path / "s.npz", inputs=NHWC)])
    np.testing.assert_array_equal(got, x)


def test_npz_missing_input(tmp_path):
    np.savez(tmp_path / "m.npz", a=np.zeros((2, 4), np.float32), c=np.zeros((2, 1)))
    with pytest.raises(DataError, match=r"m\.npz: no array for input 'b' \(arrays: a, c\)"):
        open_samples(tmp_path / "m.npz", inputs=TWO)


def test_npz_different_sample_counts(tmp_path):
    np.savez(tmp_path / "n.npz", a=np.zeros((2, 4), np.float32), b=np.zeros((3, 2, 3), np.float32))
    with pytest.raises(DataError, match="different numbers of samples"):
        open_samples(tmp_path / "n.npz", inputs=TWO)


def test_npz_nan_names_input_and_sample(tmp_path):
    b = np.zeros((4, 2, 3), np.float32)
    b[2, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", a=np.zeros((4, 4), np.float32), b=b)
    with pytest.raises(DataError, match=r"nan\.npz.*sample 2.*input 'b' contains NaN"):
        list(open_samples(tmp_path / "nan.npz", inputs=TWO))


def test_corrupt_npz(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"c\.npz: not a readable \.npz"):
        open_samples(tmp_path / "c.npz", inputs=TWO)


# -------------------------------------------------------------------------------------- Python sources


def test_iterable_of_dicts_and_errors():
    r = rng()
    items = [{"a": r.random(4, dtype=np.float32), "b": r.random((2, 3), dtype=np.float32)} for _ in range(3)]
    samples = open_samples(items, inputs=TWO)
    assert len(samples) == 3
    got = list(samples)
    assert got[1]["a"].shape == (1, 4) and got[1]["b"].shape == (1, 2, 3)
    with pytest.raises(DataError, match=r"sample 1: missing input 'b' \(has: a\)"):
        list(open_samples([items[0], {"a": items[1]["a"]}], inputs=TWO))
    with pytest.raises(DataError, match=r"sample 0: input 'a' has shape \(5,\), expected \(1, 4\) or \(4,\)"):
        list(open_samples([{"a": np.zeros(5, np.float32), "b": items[0]["b"]}], inputs=TWO))
    with pytest.raises(DataError, match=r"sample 0: int64 data given for float32 input 'a'"):
        list(open_samples([{"a": np.zeros(4, np.int64), "b": items[0]["b"]}], inputs=TWO))


def test_generator_has_no_length_and_arrays_and_mappings():
    gen = ({"input": np.zeros((8, 8, 1), np.float32)} for _ in range(2))
    samples = open_samples(gen, inputs=NHWC)
    assert samples.length is None
    with pytest.raises(TypeError):
        len(samples)
    assert len(list(samples)) == 2
    arr = np.ones((3, 8, 8, 1), np.float32)
    assert len(list(open_samples(arr, inputs=NHWC))) == 3
    mapping = {"a": np.zeros((2, 4), np.float32), "b": np.zeros((2, 2, 3), np.float32)}
    assert len(open_samples(mapping, inputs=TWO)) == 2


def test_integer_input_checks_range():
    spec = [TensorSpec("ids", (1, 3), np.dtype(np.int32))]
    ok = list(open_samples([{"ids": np.array([1, 2, 3], np.int64)}], inputs=spec))
    assert ok[0]["ids"].dtype == np.int32
    with pytest.raises(DataError, match="outside int32's range"):
        list(open_samples([{"ids": np.array([1, 2, 2**40])}], inputs=spec))
    with pytest.raises(DataError, match="float64 data given for integer input 'ids'"):
        list(open_samples([{"ids": np.array([1.0, 2.0, 3.0])}], inputs=spec))


def test_batches_concatenate_and_split_on_shape_change():
    spec = [TensorSpec("x", (-1, 2, -1), F32)]
    items = [{"x": np.full((1, 2, 3), i, np.float32)} for i in range(5)]
    items += [{"x": np.full((1, 2, 4), 9, np.float32)}]
    batches = list(iter_batches(open_samples(items, inputs=spec), 2))
    assert [b["x"].shape for b in batches] == [(2, 2, 3), (2, 2, 3), (1, 2, 3), (1, 2, 4)]
    np.testing.assert_array_equal(batches[1]["x"][:, 0, 0], [2, 3])
    assert [len(g) for g in group_samples(items, 4)] == [4, 1, 1]
    with pytest.raises(ConfigError):
        list(iter_batches(items, 0))


# ---------------------------------------------------------------------------------------------- images


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def test_image_preprocessing_matches_hand_computation(tmp_path):
    # A 2×2 RGB image, resized to 4×4 (bilinear, half-pixel centres), centre-cropped to 2×2, scaled,
    # normalised per channel, channels reversed (bgr) and laid out NCHW.
    img = np.array([[[10, 20, 30], [50, 60, 70]], [[90, 100, 110], [130, 140, 150]]], np.float64)
    _png(tmp_path / "imgs" / "a.png", img)
    pre = Preprocess(
        resize=(4, 4),
        crop=(2, 2),
        scale=0.5,
        mean=(1.0, 2.0, 3.0),
        std=(2.0, 4.0, 8.0),
        layout=Layout.NCHW,
        channels=ChannelOrder.BGR,
    )
    # Upsampling 2 → 4 with half-pixel centres: output k samples input (k + 0.5) / 2 - 0.5, clamped at edges.
    a = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    resized = np.einsum("ik,klc,jl->ijc", a, img, a)  # 4×4×3
    cropped = resized[1:3, 1:3, ::-1]  # centre crop offset round((4 - 2) / 2) = 1; bgr
    expected = ((cropped * 0.5 - np.array([1.0, 2.0, 3.0])) / np.array([2.0, 4.0, 8.0])).transpose(2, 0, 1)
    spec = [TensorSpec("x", (1, 3, 2, 2), F32)]
    got = list(open_samples(tmp_path / "imgs", inputs=spec, preprocess=pre))
    assert len(got) == 1 and got[0]["x"].shape == (1, 3, 2, 2)
    np.testing.assert_allclose(got[0]["x"][0], expected, rtol=0, atol=1e-6)


def test_gray_nhwc_inferred_from_the_model_and_sorted_recursively(tmp_path):
    r = rng()
    pics = {
        "b/2.png": r.integers(0, 256, (8, 8)),
        "a.png": r.integers(0, 256, (8, 8)),
        "b/1.jpeg": r.integers(0, 256, (8, 8)),
    }
    for name, pixels in pics.items():
        _png(tmp_path / name, pixels)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    samples = open_samples(tmp_path, inputs=NHWC)  # no preprocess: gray, NHWC, 8×8, /255
    assert len(samples) == 3
    got = [s["input"] for s in samples]
    assert all(g.shape == (1, 8, 8, 1) for g in got)
    np.testing.assert_allclose(got[0][0, :, :, 0], pics["a.png"] / 255.0, atol=1e-6)
    np.testing.assert_allclose(got[2][0, :, :, 0], pics["b/2.png"] / 255.0, atol=1e-6)
    jpeg = np.asarray(Image.open(tmp_path / "b/1.jpeg"), np.float64) / 255.0  # lossy: compare with decoded
    np.testing.assert_allclose(got[1][0, :, :, 0], jpeg, atol=1e-6)


def test_image_resize_when_shrinking_uses_pillow_bilinear(tmp_path):
    pixels = rng().integers(0, 256, (16, 12, 3))
    _png(tmp_path / "i" / "x.png", pixels)
    pre = Preprocess(resize=(8, 6), scale=1.0, layout=Layout.NHWC)
    x = load_image(tmp_path / "i" / "x.png", pre)
    ref = np.stack(
        [
            np.asarray(
                Image.fromarray(pixels[..., c].astype(np.float32)).resize((6, 8), Image.Resampling.BILINEAR)
            )
            for c in range(3)
        ],
        axis=-1,
    )
    np.testing.assert_array_equal(x[0], ref)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no PNG or JPEG images"):
        open_samples(tmp_path / "empty", inputs=NHWC)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"broken\.png: cannot read the image"):
        list(open_samples(tmp_path / "bad", inputs=NHWC))
    _png(tmp_path / "ok" / "x.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match="single-input model"):
        open_samples(tmp_path / "ok", inputs=TWO)
    wrong = Preprocess(resize=(8, 8), layout=Layout.NCHW, channels=ChannelOrder.GRAY)  # model is NHWC
    with pytest.raises(DataError, match=r"x\.png: preprocessed image has shape \(1, 1, 8, 8\).*layout"):
        list(open_samples(tmp_path / "ok", inputs=NHWC, preprocess=wrong))
    crop = Preprocess(crop=(9, 9), channels=ChannelOrder.GRAY, layout=Layout.NHWC)
    with pytest.raises(DataError, match=r"crop \(9, 9\) is larger than the image \(8, 8\)"):
        list(open_samples(tmp_path / "ok", inputs=NHWC, preprocess=crop))
    means = Preprocess(
        mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0), channels=ChannelOrder.GRAY, layout=Layout.NHWC
    )
    with pytest.raises(ConfigError, match=r"preprocess\.mean has 3 values but channels = 'gray' gives 1"):
        list(open_samples(tmp_path / "ok", inputs=NHWC, preprocess=means))


# ---------------------------------------------------------------------------------------------- labels


def test_load_labels_all_formats(tmp_path):
    labels = np.array([3, 1, 4, 1, 5])
    np.save(tmp_path / "l.npy", labels.astype(np.int32))
    np.savez(tmp_path / "l.npz", labels=labels, x=np.zeros(5))
    (tmp_path / "l.txt").write_text("3\n1\n\n4\n1\n5\n")
    np.save(tmp_path / "f.npy", labels.astype(np.float32).reshape(-1, 1))
    for name in ("l.npy", "l.npz", "l.txt", "f.npy"):
        got = load_labels(tmp_path / name)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, labels)


def test_load_labels_errors(tmp_path):
    (tmp_path / "bad.txt").write_text("1\n2\ncat\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: 'cat' is not an integer"):
        load_labels(tmp_path / "bad.txt")
    np.savez(tmp_path / "nolabels.npz", y=np.zeros(3))
    with pytest.raises(DataError, match=r"no array named 'labels' \(arrays: y\)"):
        load_labels(tmp_path / "nolabels.npz")
    np.save(tmp_path / "frac.npy", np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="whole numbers"):
        load_labels(tmp_path / "frac.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="refused"):
        load_labels(tmp_path / "obj.npy")
    with pytest.raises(DataError, match="not found"):
        load_labels(tmp_path / "none.npy")
