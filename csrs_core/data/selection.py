"""Fixed, seeded samples of a split."""
import numpy as np


def select_examples(labels, num_examples: int | None = None, per_class: int | None = None,
                    seed: int = 0) -> np.ndarray:
    """Sorted positions of a fixed sample: per_class of each class (stratified) or num_examples
    in all, drawn by a seeded permutation; everything when neither is given."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    if per_class is not None:
        picked = np.concatenate([order[labels[order] == c][:per_class] for c in np.unique(labels)])
    elif num_examples is not None:
        picked = order[:num_examples]
    else:
        picked = order
    return np.sort(picked)
