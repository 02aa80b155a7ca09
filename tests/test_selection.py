"""`pruning.selection.GuardedSelection`: the guarded choice among a run's states."""

import numpy as np
import pytest

from pruning.selection import GuardedSelection


def _offer(sel, label, losses, accuracy, taken):
    losses = np.asarray(losses, dtype=float)
    return sel.offer(label, float(losses.mean()), accuracy, losses,
                     lambda: taken.append(label) or label)


def test_first_state_is_the_incumbent_and_snapshots_are_taken_only_on_choice():
    taken: list[str] = []
    sel = GuardedSelection(z=2.0)
    assert _offer(sel, "start", [1.0, 1.0, 1.0, 1.0], 0.5, taken)
    # lower accuracy: never chosen, whatever its loss
    assert not _offer(sel, "epoch 1", [0.1, 0.1, 0.1, 0.1], 0.25, taken)
    assert taken == ["start"] and sel.label == sel.state == "start"
    assert [e["chosen"] for e in sel.log] == [True, False]


def test_plain_rule_accuracy_first_loss_breaks_ties_and_an_exact_tie_keeps_the_incumbent():
    taken: list[str] = []
    sel = GuardedSelection(z=0.0)
    assert _offer(sel, "start", [0.5, 0.5], 0.5, taken)
    assert not _offer(sel, "same", [0.5, 0.5], 0.5, taken)          # a tie: the earlier stays
    assert _offer(sel, "lower loss", [0.4, 0.4], 0.5, taken)        # same accuracy, lower loss
    assert _offer(sel, "higher acc", [0.9, 0.9], 0.75, taken)       # accuracy comes first
    assert not _offer(sel, "higher loss", [1.0, 1.0], 0.75, taken)
    assert taken == ["start", "lower loss", "higher acc"] and sel.label == "higher acc"


def test_a_change_within_noise_does_not_replace_the_incumbent():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 2.0, 300)
    noisy = base + rng.normal(0.0, 0.5, 300)
    noisy -= noisy.mean() - (base.mean() - 0.01)  # 0.01 lower on the mean, noise 0.5
    taken: list[str] = []
    guarded = GuardedSelection(z=2.0)
    _offer(guarded, "start", base, 0.9, taken)
    assert not _offer(guarded, "epoch 1", noisy, 0.9, taken)
    entry = guarded.log[-1]
    # the paired statistics, checked by hand
    diff = noisy - base
    assert entry["change"] == pytest.approx(diff.mean())
    assert entry["threshold"] == pytest.approx(-2.0 * diff.std(ddof=1) / np.sqrt(300))
    assert entry["threshold"] < entry["change"] < 0
    # z = 0: the plain rule (higher accuracy, ties to the lower loss) takes it
    plain = GuardedSelection(z=0.0)
    _offer(plain, "start", base, 0.9, taken)
    assert _offer(plain, "epoch 1", noisy, 0.9, taken) and plain.label == "epoch 1"


def test_a_clear_improvement_replaces_the_incumbent_and_later_ones_compare_with_it():
    base = np.linspace(0.5, 1.5, 200)
    sel = GuardedSelection(z=2.0)
    _offer(sel, "start", base, 0.8, [])
    assert _offer(sel, "start re-fit", base - 0.2, 0.8, [])
    # level with the new incumbent in accuracy, lower in loss by far less than its noise
    noise = np.random.default_rng(1).normal(0.0, 0.1, 200)
    assert not _offer(sel, "epoch 1", base - 0.2 + noise - noise.mean() - 1e-4, 0.8, [])
    # every sample a little lower: consistent, so it passes however small
    assert _offer(sel, "epoch 2", base - 0.2 - 1e-6, 0.8, [])
    # higher accuracy but a higher loss: a guarded selection does not move
    assert not _offer(sel, "epoch 3", base, 0.81, [])
    assert sel.label == "epoch 2"


def test_without_per_sample_losses_the_guard_falls_back_to_the_plain_rule():
    sel = GuardedSelection(z=2.0)
    assert sel.offer("start", 1.0, 0.5, None, lambda: "s")
    assert sel.offer("epoch 1", 0.99, 0.5, None, lambda: "e1")
    assert sel.log[-1]["threshold"] is None and sel.state == "e1"


def test_paired_accuracy_test_counts_discordant_pairs_and_matches_the_binomial():
    from math import comb, sqrt

    from pruning.selection import paired_accuracy_test

    # 10 samples: both right on 5, only a on 1, only b on 3, both wrong on 1
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    b = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 0], dtype=bool)
    out = paired_accuracy_test(a, b)
    assert (out["n"], out["a_only"], out["b_only"]) == (10, 1, 3)
    assert out["difference"] == pytest.approx(-0.2)
    # exact two-sided p of 1 success in 4 fair trials: P(X<=1) + P(X>=3) = 10/16
    assert out["p"] == pytest.approx(sum(comb(4, i) for i in (0, 1, 3, 4)) / 16)
    assert out["se"] == pytest.approx(sqrt(4 - 4 / 10) / 10)
    # identical predictions: nothing discordant, p = 1, no spread
    same = paired_accuracy_test(a, a)
    assert (same["a_only"], same["b_only"], same["p"], same["se"]) == (0, 0, 1.0, 0.0)
    # a consistent gap on many samples is significant
    big_a = np.ones(300, dtype=bool)
    big_b = np.arange(300) >= 30
    assert paired_accuracy_test(big_a, big_b)["p"] < 1e-6


def test_paired_accuracy_test_rejects_mismatched_shapes():
    from pruning.selection import paired_accuracy_test

    with pytest.raises(ValueError, match="same length"):
        paired_accuracy_test(np.ones(3, bool), np.ones(4, bool))
