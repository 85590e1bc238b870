import numpy as np

from prodrec.data import make_shelves, read_coco
from prodrec.data.object_drawing import random_objects


def test_random_objects_are_seeded_cut_out_and_varied():
    objects = random_objects(24, seed=0, size=96)
    assert [label for label, _ in objects] == [f"object_{n:04d}" for n in range(1, 25)]
    for _, picture in objects:
        assert picture.dtype == np.uint8 and picture.shape[2] == 4 and max(picture.shape[:2]) <= 96
        alpha = picture[..., 3]
        assert (alpha[0] >= 128).any() and (alpha[:, 0] >= 128).any()  # cropped to the silhouette
        assert (alpha < 128).any() or min(picture.shape[:2]) < 96  # a shape, not a full square
        assert picture[..., :3][alpha >= 128].std() > 3  # textured, not flat
    fill = [(picture[..., 3] >= 128).mean() for _, picture in objects]
    assert np.ptp(fill) > 0.2  # blobs, lobes and thin tools cover their boxes differently
    again = random_objects(24, seed=0, size=96)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(objects, again))
    assert not np.array_equal(objects[0][1], random_objects(1, seed=1, size=96)[0][1])


def test_make_shelves_mixes_random_objects_among_the_products(tmp_path):
    info = make_shelves(tmp_path / "shelves", scenes=6, synthetic_items=10, random_objects=10, seed=2, width=320,
                        height=240, progress=False)
    labels = {label for row in read_coco(info.annotations, tmp_path / "shelves").products for label in row}
    assert any(label.startswith("object_") for label in labels) and any(label.startswith("id_") for label in labels)
