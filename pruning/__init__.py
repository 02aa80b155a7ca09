"""Neural-network pruning: iCBS block coordinate descent and one-shot baselines.

    >>> from pruning import ICBSConfig, prune
    >>> report = prune(model, loss_fn, train_loader, val_loader, ICBSConfig(density=0.1))

Models go in, block `qcbo.Problem`s come out, any backend solves them, and the answers
come back as masks. ``pruning.llm`` holds the language-model glue.
"""

from .baselines import BASELINES, masks_from_scores, one_shot, prunable_weights
from .block import block_problem, block_qcbo, taylor_change
from .icbs import ICBSConfig, evaluate_loader, prune

__all__ = [
    "BASELINES",
    "ICBSConfig",
    "block_problem",
    "block_qcbo",
    "evaluate_loader",
    "masks_from_scores",
    "one_shot",
    "prunable_weights",
    "prune",
    "taylor_change",
]
