"""Small demo models shipped with propex.

Currently a CNN for scikit-learn's 8x8 handwritten digits (see
:mod:`propex.models.digits`). Loading the data needs scikit-learn
(``pip install 'propex[demo]'``); the model itself needs only torch.
"""

from propex.models.digits import (
    DIGITS_CLASSES,
    DIGITS_INPUT_SHAPE,
    DigitsCNN,
    load_demo,
    load_digits_data,
    load_digits_model,
    preprocess_digits,
)

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_INPUT_SHAPE",
    "DigitsCNN",
    "load_demo",
    "load_digits_data",
    "load_digits_model",
    "preprocess_digits",
]
