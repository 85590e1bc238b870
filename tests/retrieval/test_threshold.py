import math

import numpy as np
import pytest

from prodrec.retrieval import (TopOneOutcomes, choose_threshold, error_rates, far_upper_bound, min_supported_far,
                               open_set_rates, plot_error_rates)

# Ten queries of gallery products (two of them name another product first) and ten of products it lacks.
KNOWN = np.array([0.95, 0.92, 0.9, 0.88, 0.85, 0.8, 0.75, 0.7, 0.65, 0.5], dtype=np.float32)
CORRECT = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
UNKNOWN = np.array([0.91, 0.83, 0.78, 0.72, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1], dtype=np.float32)


def above(score):
    return float(np.nextafter(np.float32(score), np.float32(np.inf)))


@pytest.mark.parametrize("far, cut, false_accepts, correct_accepts", [
    (0.2, 0.72, 4, 6),   # 4 of 20 may pass (0.91, 0.88, 0.83, 0.78): the 5th wrong score, 0.72, must fail
    (0.25, 0.65, 5, 7),  # 0.72 passes too; 0.65 (a known query naming another product) must fail
    (0.5, 0.2, 10, 8),   # 10 may pass: everything above 0.2, so every right answer passes
])
def test_hand_worked_choice(far, cut, false_accepts, correct_accepts):
    choice = choose_threshold(TopOneOutcomes(KNOWN, CORRECT, UNKNOWN), far)
    assert choice.threshold == above(cut)
    assert (choice.false_accepts, choice.far) == (false_accepts, false_accepts / 20)
    assert choice.false_rejects == 10 - correct_accepts and choice.frr == pytest.approx((10 - correct_accepts) / 10)
    assert (choice.known_queries, choice.unknown_queries, choice.far_target) == (10, 10, far)
    assert choice.min_supported_far == pytest.approx(1 - 0.05 ** (1 / 20))


def test_distances_choose_the_mirror_threshold():
    similar = choose_threshold(TopOneOutcomes(KNOWN, CORRECT, UNKNOWN), 0.25)
    distant = choose_threshold(TopOneOutcomes(-KNOWN, CORRECT, -UNKNOWN, higher_is_better=False), 0.25)
    assert distant.threshold == -similar.threshold
    assert (distant.far, distant.frr, distant.false_accepts) == (similar.far, similar.frr, similar.false_accepts)


def test_a_loose_target_accepts_everything():
    choice = choose_threshold(TopOneOutcomes(KNOWN, CORRECT, UNKNOWN[:2]), 0.9)
    assert choice.threshold == pytest.approx(0.5) and choice.frr == pytest.approx(0.2)  # the two wrong top-1s
    assert choice.false_accepts == 4


def test_tied_wrong_scores_all_fail_when_one_must():
    outcomes = TopOneOutcomes(np.full(10, 0.9, dtype=np.float32), np.ones(10, bool), np.array([0.8] * 3 + [0.1] * 7))
    choice = choose_threshold(outcomes, 0.2)  # 4 of 20 may pass, but three tied at 0.8 and the next ties at 0.1
    assert choice.threshold == above(0.1) and choice.false_accepts == 3
    choice = choose_threshold(outcomes, 0.149)  # 2 may pass: not two of the three 0.8s, so none of them
    assert choice.threshold == above(0.8) and choice.false_accepts == 0 and choice.frr == 0


def slow_choice(known, correct, unknown, far):
    """Every candidate threshold tried in turn: the smallest whose FAR is within the target."""
    scores = np.concatenate([known, unknown]).astype(np.float32)
    candidates = sorted(set(scores.tolist()) | {above(s) for s in scores.tolist()})
    for threshold in candidates:
        false_accepts = sum(s >= threshold for s, c in zip(known, correct) if not c) + sum(s >= threshold for s in unknown)
        if false_accepts <= math.floor(far * len(scores) + 1e-9):
            rejected = sum(not (c and s >= threshold) for s, c in zip(known, correct))
            return threshold, false_accepts, rejected / len(known)


@pytest.mark.parametrize("seed", range(6))
def test_choice_equals_a_slow_search_over_every_threshold(seed):
    rng = np.random.default_rng(seed)
    known = np.round(rng.uniform(0, 1, 150), 2).astype(np.float32)  # rounded: many ties
    correct = rng.random(150) < 0.8
    unknown = np.round(rng.uniform(0, 0.9, 100), 2).astype(np.float32)
    for far in (0.02, 0.05, 0.3):
        choice = choose_threshold(TopOneOutcomes(known, correct, unknown), far)
        threshold, false_accepts, frr = slow_choice(known, correct, unknown, far)
        assert (choice.threshold, choice.false_accepts) == (threshold, false_accepts)
        assert choice.frr == pytest.approx(frr)


def test_error_rates_count_as_search_decides():
    outcomes = TopOneOutcomes(KNOWN, CORRECT, UNKNOWN)
    rates = error_rates(outcomes, np.array([0.0, 0.72, 0.9, 1.0], dtype=np.float32))  # as stored: float32
    assert rates["far"].tolist() == [12 / 20, 5 / 20, 1 / 20, 0]  # a score equal to the threshold passes
    assert rates["frr"].tolist() == pytest.approx([0.2, 0.4, 0.7, 1.0])
    unknown_only = error_rates(TopOneOutcomes(np.empty(0), np.empty(0, bool), UNKNOWN), [0.5])
    assert np.isnan(unknown_only["frr"]).all() and unknown_only["far"].tolist() == [0.6]


def test_too_few_queries_are_refused_naming_what_they_support():
    outcomes = TopOneOutcomes(KNOWN, CORRECT, UNKNOWN)
    with pytest.raises(ValueError, match=r"0\.1 cannot be backed by 20 queries: the smallest they support is 0\.14.*"
                                         r"--far 0\.14 or more"):
        choose_threshold(outcomes, 0.1)
    assert min_supported_far(20) == pytest.approx(far_upper_bound(0, 20))


def test_upper_bound_is_clopper_pearson():
    assert far_upper_bound(1, 10) == pytest.approx(0.3942, abs=1e-4)  # one-sided 95 %, tables
    assert far_upper_bound(0, 300) == pytest.approx(0.00994, abs=1e-5)  # about 3 / n
    assert far_upper_bound(5, 5) == 1.0


@pytest.mark.parametrize("far", [0, 1, -0.1, 1.5, True, "0.1", float("nan")])
def test_targets_outside_zero_one_are_refused(far):
    with pytest.raises(ValueError, match=r"must be a number in \(0, 1\)"):
        choose_threshold(TopOneOutcomes(KNOWN, CORRECT, UNKNOWN), far)


def test_bad_outcomes_are_refused():
    with pytest.raises(ValueError, match="no queries"):
        TopOneOutcomes(np.empty(0), np.empty(0, bool), np.empty(0))
    with pytest.raises(ValueError, match="finite"):
        TopOneOutcomes(np.array([-np.inf]), np.array([True]), np.empty(0))
    with pytest.raises(ValueError, match="one length"):
        TopOneOutcomes(np.array([0.5, 0.6]), np.array([True]), np.empty(0))


def clustered(rng, products, per_product, dim=8, spread=0.3):
    centres = rng.normal(size=(products, dim))
    labels = np.repeat(np.arange(products), per_product)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_open_set_rates_leave_half_the_products_out():
    rng = np.random.default_rng(0)
    gallery, gallery_labels = clustered(rng, 40, 3)
    queries, query_labels = clustered(rng, 40, 30)
    result = open_set_rates(queries, query_labels, gallery, gallery_labels, fars=(0.1, 0.01, 0.001), seed=3)
    assert result["open_set/known_queries"] == result["open_set/unknown_queries"] == 600
    assert 0 <= result["frr@far=0.1"] <= result["frr@far=0.01"] <= 1
    assert result["frr@far=0.001"] is None and result["threshold@far=0.001"] is None  # 1,200 queries back 0.0025
    assert result["open_set/min_supported_far"] == pytest.approx(min_supported_far(1200))
    assert open_set_rates(queries, query_labels, gallery, gallery_labels, seed=3) == result  # seeded
    with pytest.raises(ValueError, match="splits the query products in two"):
        open_set_rates(queries[:5], np.zeros(5), gallery, gallery_labels)


def test_plot_draws_both_panels(tmp_path):
    pytest.importorskip("matplotlib")
    outcomes = TopOneOutcomes(KNOWN, CORRECT, UNKNOWN)
    plot_error_rates(outcomes, tmp_path / "new" / "rates.png", choose_threshold(outcomes, 0.25))  # folder made
    assert (tmp_path / "new" / "rates.png").stat().st_size > 10_000
