import numpy as np
import pytest

from prodrec.models import FeatureWriter, open_features


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_in_chunks(tmp_path, dtype):
    rows = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    path = tmp_path / "features.npy"
    with FeatureWriter(path, num_rows=10, dim=4, dtype=dtype) as writer:
        for start in range(0, 10, 3):
            writer.write(rows[start:start + 3])
        assert not path.exists() and writer.rows_written == 10  # named .partial until closed
    mapped = open_features(path)
    assert isinstance(mapped, np.memmap) and mapped.dtype == dtype and mapped.shape == (10, 4)
    assert not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, rows.astype(dtype))
    np.testing.assert_array_equal(np.load(path), rows.astype(dtype))  # a plain .npy file


def test_an_exception_leaves_no_file(tmp_path):
    path = tmp_path / "features.npy"
    with pytest.raises(RuntimeError):
        with FeatureWriter(path, num_rows=4, dim=2) as writer:
            writer.write(np.ones((2, 2)))
            raise RuntimeError("extraction failed")
    assert list(tmp_path.iterdir()) == []


def test_too_few_rows_is_an_error_and_leaves_no_file(tmp_path):
    writer = FeatureWriter(tmp_path / "features.npy", num_rows=4, dim=2)
    writer.write(np.ones((3, 2)))
    with pytest.raises(ValueError, match="got 3 of 4 rows"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_write_checks_shape_count_and_range(tmp_path):
    writer = FeatureWriter(tmp_path / "features.npy", num_rows=3, dim=2, dtype="float16")
    with pytest.raises(ValueError, match=r"real array \[n, 2\]"):
        writer.write(np.ones((1, 3)))
    with pytest.raises(ValueError, match="would exceed"):
        writer.write(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"1 rows are not finite as float16 .* first rows \[1\]"):
        writer.write([[0.0, 1.0], [1e6, 0.0]])  # beyond float16's range
    writer.abort()


@pytest.mark.parametrize("kwargs, match", [
    ({"num_rows": 0}, "num_rows must be a positive integer"),
    ({"dim": 2.5}, "dim must be a positive integer"),
    ({"dtype": "float64"}, "dtype must be one of"),
])
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureWriter(tmp_path / "f.npy", **{"num_rows": 2, "dim": 2, **kwargs})


def test_open_features_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        open_features(tmp_path / "missing.npy")
    writer = FeatureWriter(tmp_path / "unfinished.npy", num_rows=2, dim=2)
    with pytest.raises(FileNotFoundError, match="unfinished.npy.partial exists"):
        open_features(tmp_path / "unfinished.npy")
    writer.abort()
    np.save(tmp_path / "labels.npy", np.arange(3))
    with pytest.raises(ValueError, match="expected a 2-D float32 or float16 array"):
        open_features(tmp_path / "labels.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ValueError, match="not a .npy embeddings file"):
        open_features(tmp_path / "text.npy")
