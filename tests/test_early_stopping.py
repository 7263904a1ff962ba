"""Early stopping and best-checkpoint selection on known validation-loss sequences."""

from __future__ import annotations

from forgellm.training.early_stopping import EarlyStopper


def feed(stopper: EarlyStopper, losses: list[float], every: int = 10) -> tuple[int | None, list[int]]:
    """Feed losses at steps every, 2*every, ...; return (step it stopped at, steps that were best)."""
    best_steps = []
    for i, loss in enumerate(losses, start=1):
        verdict = stopper.update(i * every, loss)
        if verdict.is_best:
            best_steps.append(i * every)
        if verdict.stop_reason:
            return i * every, best_steps
    return None, best_steps


def test_patience_counts_each_evaluation_once() -> None:
    stop, best = feed(EarlyStopper(patience=2), [3.0, 2.5, 2.6, 2.4, 2.45, 2.5, 1.0])
    assert stop == 60  # 2.4 at step 40 is best; 50 and 60 do not improve
    assert best == [10, 20, 40]


def test_min_delta_needs_a_real_improvement() -> None:
    stopper = EarlyStopper(patience=2, min_delta=0.1)
    stop, best = feed(stopper, [3.0, 2.95, 2.91, 2.5])
    assert stop == 30  # 2.95 and 2.91 are lower but not by more than 0.1
    assert best == [10, 20, 30]  # yet the best checkpoint still follows the lowest loss
    assert stopper.best_step == 30


def test_overfit_threshold_stops_on_a_rise() -> None:
    stop, _ = feed(EarlyStopper(overfit_threshold=0.1), [2.0, 1.8, 1.9, 1.95, 2.0])
    assert stop == 50  # 2.0 > 1.8 * 1.1 = 1.98, while 1.95 at step 40 is still within 10%
    stop, _ = feed(EarlyStopper(overfit_threshold=0.2), [2.0, 1.8, 1.9, 1.95, 2.0])
    assert stop is None


def test_disabled_never_stops() -> None:
    stop, best = feed(EarlyStopper(), [1.0, 2.0, 3.0, 4.0])
    assert stop is None and best == [10]


def test_nan_stops_with_a_reason() -> None:
    verdict = EarlyStopper().update(10, float("nan"))
    assert verdict.stop_reason and "nan" in verdict.stop_reason


def test_state_round_trip_continues_the_same_count() -> None:
    a = EarlyStopper(patience=3)
    feed(a, [2.0, 2.1, 2.2])
    b = EarlyStopper.from_state(a.state())
    assert b.update(40, 2.3).stop_reason is not None
