import pickle

import numpy as np
import pytest
import torch

from prodrec.data import EpochBatches, SeededSamples
from prodrec.data import eval_transform, train_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _gradient(height=16, width=16):
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 15, y * 15, (x + y) * 7], axis=-1).astype(np.uint8)


def test_eval_transform_normalises_a_constant_image():
    out = eval_transform(32, MEAN, STD)(np.full((20, 30, 3), 100, np.uint8))
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    expected = (100 / 255 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(out.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)
    assert float(out.std(dim=(1, 2)).max()) < 1e-5


def test_flip_with_probability_one_mirrors_the_image():
    image = _gradient()
    flipped = train_transform(16, MEAN, STD, horizontal_flip=1.0, random_erasing=0.0)(image)
    expected = eval_transform(16, MEAN, STD)(np.ascontiguousarray(image[:, ::-1]))
    torch.testing.assert_close(flipped, expected)


def test_erasing_with_probability_one_zeroes_a_rectangle():
    image = np.full((64, 64, 3), 200, np.uint8)
    out = train_transform(64, MEAN, STD, horizontal_flip=0.0, random_erasing=1.0)(image)
    zero = (out == 0).all(dim=0)
    assert (out == 0).any(dim=0).equal(zero)
    rows, cols = torch.nonzero(zero, as_tuple=True)
    box = zero[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert box.all() and 0.02 * 64 * 64 - 64 <= zero.sum() <= 0.4 * 64 * 64 + 64


def test_zero_probabilities_drop_the_steps_and_repr_shows_the_pipeline():
    assert "HorizontalFlip" in repr(train_transform(8, MEAN, STD))
    assert "Erasing" in repr(train_transform(8, MEAN, STD))
    text = repr(train_transform(8, MEAN, STD, horizontal_flip=0, random_erasing=0))
    assert "Resize" in text and "Normalize" in text
    assert "HorizontalFlip" not in text and "Erasing" not in text


def test_transforms_are_picklable():
    image = _gradient()
    transform = eval_transform(16, MEAN, STD)
    torch.testing.assert_close(pickle.loads(pickle.dumps(transform))(image), transform(image))
    assert pickle.loads(pickle.dumps(train_transform(16, MEAN, STD)))(image).shape == (3, 16, 16)


def test_augmentation_follows_torch_manual_seed():
    image = _gradient()
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        transform = train_transform(16, MEAN, STD)
        outputs.append(torch.stack([transform(image) for _ in range(8)]))
    torch.testing.assert_close(outputs[0], outputs[1])
    assert len({tuple(out.flatten().tolist()) for out in outputs[0]}) > 1  # still random call to call


class _Repeat(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 16

    def __getitem__(self, index):
        return self.transform(_gradient(32, 32))


def test_dataloader_workers_do_not_repeat_each_other():
    loader = torch.utils.data.DataLoader(_Repeat(train_transform(32, MEAN, STD)), batch_size=8, num_workers=2)
    first, second = list(loader)  # one batch from each worker
    assert not torch.equal(first, second)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="image_size"):
        eval_transform(0, MEAN, STD)
    with pytest.raises(ValueError, match="mean must have 3 values"):
        eval_transform(8, (0.5,), STD)
    with pytest.raises(ValueError, match="std values must be positive"):
        eval_transform(8, MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="random_erasing"):
        train_transform(8, MEAN, STD, random_erasing=1.5)
    with pytest.raises(TypeError, match="HxWx3 uint8"):
        eval_transform(8, MEAN, STD)(np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match="float32"):
        eval_transform(8, MEAN, STD)(np.zeros((8, 8, 3), np.float32))


def test_reseed_makes_the_augmentation_a_function_of_the_seed():
    image = _gradient(32, 32)
    transform = train_transform(16, MEAN, STD)
    outputs = {}
    for seed in [5, 6, 5, 7, 5]:
        transform.reseed(seed)
        outputs.setdefault(seed, []).append(transform(image))
    torch.testing.assert_close(outputs[5][0], outputs[5][1])
    torch.testing.assert_close(outputs[5][0], outputs[5][2])
    assert len({tuple(out[0].flatten().tolist()) for out in outputs.values()}) > 1


class _Gradients(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 16

    def __getitem__(self, index):
        return self.transform(_gradient(32, 32)), index


def test_seeded_batches_do_not_depend_on_the_number_of_workers():
    transform = train_transform(16, MEAN, STD)
    runs = []
    for workers in (0, 2):
        sampler = EpochBatches(np.repeat(np.arange(8), 2), batch_size=4, instances=2, seed=0)
        loader = torch.utils.data.DataLoader(SeededSamples(_Gradients(transform), transform), batch_sampler=sampler,
                                             num_workers=workers)
        runs.append(list(loader))
    for (images_0, index_0), (images_2, index_2) in zip(*runs):
        assert torch.equal(index_0, index_2) and torch.equal(images_0, images_2)
    assert len(runs[0]) == 4 and not torch.equal(runs[0][0][0][0], runs[0][0][0][1])
