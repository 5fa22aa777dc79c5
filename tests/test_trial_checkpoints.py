"""Which epochs a trial hands Tune as checkpoints: every new best (Tune keeps the best by score, so
the registry needs nothing else), the last, and every ``checkpoint_every``-th for restarts."""

import pytest

from depthtune.trial import checkpoint_due


@pytest.mark.parametrize(
    ("every", "bests", "expected"),
    [
        (1, {0}, set(range(7))),
        (3, {0, 1}, {0, 1, 2, 5, 6}),
        (3, set(), {2, 5, 6}),
        (10, {0, 4}, {0, 4, 6}),
    ],
    ids=["every epoch", "bests, every 3rd and the last", "plateau: every 3rd and the last", "every beyond the budget"],
)
def test_checkpoints_fall_on_new_bests_the_last_epoch_and_every_nth(every, bests, expected):
    epochs = 7
    due = {epoch for epoch in range(epochs) if checkpoint_due(epoch, epochs, every, epoch in bests)}
    assert due == expected
