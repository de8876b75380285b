"""Errors of training, evaluation and model loading.

StreamRecError
└── ModelError                 anything about the ranking / retrieval models
    ├── TrainingError          the training data cannot train a model (empty, too small)
    └── ModelLoadError         a version directory is missing files or does not match
"""

from streamrec.errors import StreamRecError


class ModelError(StreamRecError):
    """Base of the model area's errors."""


class TrainingError(ModelError):
    """The data given to training cannot produce a model (e.g. no users with history)."""


class ModelLoadError(ModelError):
    """A model version directory cannot be loaded (missing or mismatched artifacts)."""
