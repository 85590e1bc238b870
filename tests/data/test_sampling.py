from collections import Counter

import numpy as np
import pytest

from prodrec.data.sampling import EpochBatches, SeededSamples, apply_small_class_policy, pk_sampler, small_classes


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


def _global(batches_sampler, epoch):
    indices, seeds = batches_sampler.global_batches(epoch)
    return indices.tolist(), seeds.tolist()


@pytest.mark.parametrize("instances", [2, None])
def test_epoch_batches_are_a_pure_function_of_seed_and_epoch(instances):
    labels = _labels([5, 4, 7, 4, 6, 4, 5, 4, 8, 4])
    first = EpochBatches(labels, batch_size=8, instances=instances, seed=3)
    np.random.seed(0)
    a = _global(first, 1)
    np.random.seed(99)  # the global random state plays no part, nor does iterating another epoch first
    list(EpochBatches(labels, batch_size=8, instances=instances, seed=3))
    second = EpochBatches(labels, batch_size=8, instances=instances, seed=3)
    second.set_epoch(1)
    assert [[i for i, _ in batch] for batch in second] == a[0]
    assert [[s for _, s in batch] for batch in second] == a[1]
    assert a != _global(first, 2) and a != _global(EpochBatches(labels, batch_size=8, instances=instances, seed=4), 1)
    seeds = np.array(a[1]).ravel()
    assert len(set(seeds.tolist())) == len(seeds) and seeds.min() >= 0


def test_epoch_batches_pk_structure_and_shuffle_covers_each_sample_once():
    labels = _labels([5, 4, 7, 4, 6, 4, 5, 4, 8, 4])
    for batch in EpochBatches(labels, batch_size=12, instances=4, seed=0).global_batches(0)[0]:
        assert set(Counter(labels[batch].tolist()).values()) == {4} and len(set(batch.tolist())) == 12
    shuffled = EpochBatches(labels, batch_size=8, seed=0)
    indices = shuffled.global_batches(0)[0].ravel()
    assert len(shuffled) == len(labels) // 8 and len(set(indices.tolist())) == len(indices) == len(shuffled) * 8


def test_set_epoch_start_skips_the_first_batches():
    labels = _labels([4] * 10)
    sampler = EpochBatches(labels, batch_size=8, instances=2, seed=1)
    sampler.set_epoch(5)
    full = list(sampler)
    sampler.set_epoch(5, start=3)
    assert list(sampler) == full[3:] and len(sampler) == len(full) == 5


def test_ranks_cut_the_global_batch_list_into_whole_batches():
    labels = _labels([6, 4, 7, 4, 6, 4, 5, 4, 8, 4, 6, 4])
    single = EpochBatches(labels, batch_size=8, instances=2, seed=2)
    single.set_epoch(3)
    everything = list(single)
    ranks = []
    for rank in range(2):
        sampler = EpochBatches(labels, batch_size=8, instances=2, seed=2, rank=rank, world_size=2)
        sampler.set_epoch(3)
        ranks.append(list(sampler))
    assert len(everything) == 7 and [len(r) for r in ranks] == [3, 3]  # the 7th global batch is dropped
    assert sorted(ranks[0] + ranks[1]) == sorted(everything[:6])
    assert ranks[0] == everything[0:6:2] and ranks[1] == everything[1:6:2]
    for batch in ranks[1]:
        assert set(Counter(labels[[i for i, _ in batch]].tolist()).values()) == {2}


def test_epoch_batches_errors():
    labels = _labels([4] * 5)
    with pytest.raises(ValueError, match="not a multiple of instances"):
        EpochBatches(labels, batch_size=9, instances=2)
    with pytest.raises(ValueError, match=r"epoch length must lie in 8 \(batch_size\)..20, got 40"):
        EpochBatches(labels, batch_size=8, length=40)
    with pytest.raises(ValueError, match="rank 2 of 2"):
        EpochBatches(labels, batch_size=8, instances=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="2 batches cannot give each of 3 ranks one"):
        EpochBatches(labels, batch_size=8, instances=2, world_size=3)


class _Recorder:
    def __init__(self):
        self.seeds = []

    def reseed(self, seed):
        self.seeds.append(seed)


def test_seeded_samples_reseed_the_transform_before_each_sample():
    recorder = _Recorder()
    samples = SeededSamples(["a", "b", "c"], recorder)
    assert (samples[(2, 11)], samples[(0, 12)], len(samples)) == ("c", "a", 3)
    assert recorder.seeds == [11, 12]
    with pytest.raises(TypeError, match="reseed"):
        SeededSamples([], lambda image: image)
