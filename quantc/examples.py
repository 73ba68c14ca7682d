"""The bundled example: a small CNN trained on scikit-learn's digits, with its data splits.

``digits_model()`` builds it as a :class:`quantc.Model` from the weights in
``quantc/data/digits_cnn.npz`` (trained by ``scripts/train_digits.py``); ``digits_data()``
returns the 360 held-out test images as float32 (N, 1, 8, 8) in [0, 1] with their labels,
``digits_train()`` the 1437 training images the weights were trained on (for fine-tuning,
e.g. quantization-aware training), ``digits_calibration()`` the first 256 of them as
calibration batches. Nothing is downloaded.
"""
import os

import numpy as np

from .model import ModelBuilder

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DIGITS_WEIGHTS = os.path.join(DATA, "digits_cnn.npz")
DIGITS_TEST = os.path.join(DATA, "digits_test.npz")
DIGITS_TRAIN = os.path.join(DATA, "digits_train.npz")

__all__ = ["digits_weights", "digits_data", "digits_train", "digits_calibration",
           "digits_model", "digits_logits"]


def digits_weights():
    """name -> float32 array: conv1/conv2 (3x3, pad 1), fc1 (512->128), fc2 (128->10)."""
    with np.load(DIGITS_WEIGHTS, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _images(path):
    with np.load(path, allow_pickle=False) as f:
        return (f["images"].astype(np.float32) / np.float32(16))[:, None], f["labels"]


def digits_data():
    """The held-out test split: (images float32 (360, 1, 8, 8) in [0, 1], labels uint8)."""
    return _images(DIGITS_TEST)


def digits_train():
    """The training split (disjoint from the test split): (images float32 (1437, 1, 8, 8) in
    [0, 1], labels uint8)."""
    return _images(DIGITS_TRAIN)


def digits_calibration(batch_size=32):
    """The first 256 training images (not in the test split) as a list of float32
    (batch, 1, 8, 8) batches: calibration data for :func:`quantc.quantize_model`."""
    x = digits_train()[0][:256]
    return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]


def digits_model(weights=None):
    """The digits CNN as a :class:`quantc.Model` (``weights`` default: the bundled ones):
    conv 1->16, ReLU, conv 16->32, ReLU, 2x2 max pool, flatten, fc 512->128, ReLU, fc 128->10."""
    p = digits_weights() if weights is None else weights
    b = ModelBuilder("digits_cnn")
    x = b.input("image", (None, 1, 8, 8))
    h = b.relu(b.conv(x, p["conv1.weight"], p["conv1.bias"], pads=1, name="conv1"))
    h = b.relu(b.conv(h, p["conv2.weight"], p["conv2.bias"], pads=1, name="conv2"))
    h = b.flatten(b.max_pool(h, 2))
    h = b.relu(b.linear(h, p["fc1.weight"], p["fc1.bias"], name="fc1"))
    b.output(b.linear(h, p["fc2.weight"], p["fc2.bias"], name="fc2"))
    return b.build()


def digits_logits(weights, images):
    """The digits CNN's forward pass written out in NumPy float32 (a reference for tests):
    ``weights`` name -> array, ``images`` (N, 1, 8, 8) float in [0, 1]."""
    return digits_model(weights)(images)
