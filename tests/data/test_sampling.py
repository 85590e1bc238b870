from collections import Counter

import numpy as np
import pytest

from prodrec.data.sampling import apply_small_class_policy, pk_sampler, small_classes


def _labels(counts):
    return np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize("batch_size, instances", [(8, 2), (12, 4), (6, 3)])
def test_every_batch_holds_p_classes_of_k_instances(batch_size, instances):
    np.random.seed(0)
    labels = _labels([5, 4, 7, 4, 6, 4, 5, 4, 8, 4])
    sampler = pk_sampler(labels, batch_size=batch_size, instances=instances)
    indices = np.array(list(sampler))
    assert len(sampler) == len(indices) == len(labels) // batch_size * batch_size
    for batch in indices.reshape(-1, batch_size):
        counts = Counter(labels[batch].tolist())
        assert len(counts) == batch_size // instances and set(counts.values()) == {instances}
        assert len(set(batch.tolist())) == batch_size  # every class has >= K images: no repeats


def test_small_classes_are_sampled_with_replacement():
    np.random.seed(1)
    labels = _labels([1, 4, 4, 4])
    indices = np.array(list(pk_sampler(labels, batch_size=8, instances=2, length=64)))
    assert len(indices) == 64
    for batch in indices.reshape(-1, 8):
        assert set(Counter(labels[batch].tolist()).values()) == {2}


def test_length_is_rounded_down_to_whole_batches():
    labels = _labels([4] * 5)
    assert len(pk_sampler(labels, batch_size=8, instances=2, length=30)) == 24


def test_pk_sampler_errors_say_what_works():
    labels = _labels([4] * 5)
    with pytest.raises(ValueError, match="batch_size 9 is not a multiple of instances 2; use e.g. batch_size 8 or 10"):
        pk_sampler(labels, batch_size=9, instances=2)
    with pytest.raises(ValueError, match="needs 6 classes but the data has 5; the largest batch_size is 10"):
        pk_sampler(labels, batch_size=12, instances=2)
    with pytest.raises(ValueError, match="smaller than one batch"):
        pk_sampler(_labels([1, 1, 1, 1]), batch_size=8, instances=2)
    with pytest.raises(ValueError, match="epoch length"):
        pk_sampler(labels, batch_size=8, instances=2, length=4)
    with pytest.raises(ValueError, match="instances must be a positive integer"):
        pk_sampler(labels, batch_size=8, instances=0)
    with pytest.raises(ValueError, match="1-D integer"):
        pk_sampler(np.zeros(8), batch_size=8, instances=2)


def test_small_classes():
    labels = np.array([7, 7, 3, 9, 9, 9, 1])
    assert small_classes(labels, 3) == {1: 1, 3: 1, 7: 2}
    assert small_classes(labels, 1) == {}


def test_small_class_policies():
    labels = np.array([0, 0, 1, 2, 2, 3])
    assert apply_small_class_policy(labels, 2, "repeat").tolist() == [0, 1, 2, 3, 4, 5]
    assert apply_small_class_policy(labels, 2, "drop").tolist() == [0, 1, 3, 4]
    assert apply_small_class_policy(labels, 1, "error").tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match=r"2 classes have fewer than 2 images \(label: count\): 1: 1, 3: 1\. "
                                         r"Lower --instances / DataLoader.sample_per_id.*small_items: repeat"):
        apply_small_class_policy(labels, 2, "error")
    with pytest.raises(ValueError, match="leaves nothing"):
        apply_small_class_policy(labels, 5, "drop")
    with pytest.raises(ValueError, match="unknown small-class policy 'keep'; use one of error, repeat, drop"):
        apply_small_class_policy(labels, 2, "keep")


def test_error_lists_the_first_20_small_classes():
    with pytest.raises(ValueError, match=r"25 classes .*: 0: 1, 1: 1, .* 19: 1, \.\.\. and 5 more\.") as info:
        apply_small_class_policy(np.arange(25), 2, "error")
    assert "20: 1" not in str(info.value)
