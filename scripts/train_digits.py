"""Train quantc's bundled example: a small CNN on scikit-learn's 8x8 digits, in pure NumPy.

    python scripts/train_digits.py        # writes quantc/data/digits_cnn.npz, digits_test.npz

Network (NCHW, weights laid out like PyTorch): conv1 3x3 1->16 pad 1, ReLU; conv2 3x3 16->32
pad 1, ReLU; 2x2 max pool; fc1 512->128, ReLU; fc2 128->10. Trained with Adam and a fixed seed
on 1437 images; the other 360 (stratified, random_state=0) are the held-out test split that
ships with the package so the demo needs no scikit-learn. Deterministic for a given NumPy/BLAS.
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "quantc", "data")


def im2col(x):
    """(N, C, 8, 8) -> (N, C*9, 64): 3x3 patches with zero padding 1, (c, di, dj) order."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=2)
    return cols.reshape(n, c * 9, h * w)


def col2im(dcols, c, h, w):
    n = dcols.shape[0]
    d = dcols.reshape(n, c, 9, h, w)
    dxp = np.zeros((n, c, h + 2, w + 2), dcols.dtype)
    for k in range(9):
        i, j = divmod(k, 3)
        dxp[:, :, i:i + h, j:j + w] += d[:, :, k]
    return dxp[:, :, 1:-1, 1:-1]


def conv(x, w, b):
    cols = im2col(x)
    m = w.shape[0]
    out = np.einsum("mk,nkp->nmp", w.reshape(m, -1), cols, optimize=True)
    return (out + b[None, :, None]).reshape(x.shape[0], m, x.shape[2], x.shape[3]), cols


def forward(p, x, keep=False):
    h1, c1 = conv(x, p["conv1.weight"], p["conv1.bias"])
    a1 = np.maximum(h1, 0)
    h2, c2 = conv(a1, p["conv2.weight"], p["conv2.bias"])
    a2 = np.maximum(h2, 0)
    n = x.shape[0]
    win = a2.reshape(n, 32, 4, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, 32, 4, 4, 4)
    pooled = win.max(axis=-1)
    flat = pooled.reshape(n, -1)
    h3 = flat @ p["fc1.weight"].T + p["fc1.bias"]
    a3 = np.maximum(h3, 0)
    logits = a3 @ p["fc2.weight"].T + p["fc2.bias"]
    if not keep:
        return logits
    return logits, dict(c1=c1, h1=h1, a1=a1, c2=c2, h2=h2, win=win, flat=flat, h3=h3, a3=a3)


def backward(p, x, y, cache, logits):
    n = x.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    loss = -np.log(prob[np.arange(n), y] + 1e-12).mean()
    g = {}
    d = prob
    d[np.arange(n), y] -= 1
    d /= n
    g["fc2.weight"] = d.T @ cache["a3"]
    g["fc2.bias"] = d.sum(0)
    d = (d @ p["fc2.weight"]) * (cache["h3"] > 0)
    g["fc1.weight"] = d.T @ cache["flat"]
    g["fc1.bias"] = d.sum(0)
    d = (d @ p["fc1.weight"]).reshape(n, 32, 4, 4)
    win = cache["win"]
    mask = win == win.max(axis=-1, keepdims=True)
    mask = mask / mask.sum(axis=-1, keepdims=True)
    dwin = mask * d[..., None]
    da2 = dwin.reshape(n, 32, 4, 4, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, 32, 8, 8)
    dh2 = (da2 * (cache["h2"] > 0)).reshape(n, 32, 64)
    g["conv2.weight"] = np.einsum("nmp,nkp->mk", dh2, cache["c2"],
                                  optimize=True).reshape(p["conv2.weight"].shape)
    g["conv2.bias"] = dh2.sum((0, 2))
    dcols = np.einsum("mk,nmp->nkp", p["conv2.weight"].reshape(32, -1), dh2, optimize=True)
    da1 = col2im(dcols, 16, 8, 8)
    dh1 = (da1 * (cache["h1"] > 0)).reshape(n, 16, 64)
    g["conv1.weight"] = np.einsum("nmp,nkp->mk", dh1, cache["c1"],
                                  optimize=True).reshape(p["conv1.weight"].shape)
    g["conv1.bias"] = dh1.sum((0, 2))
    return loss, g


def init(rng):
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return {
        "conv1.weight": he((16, 1, 3, 3), 9), "conv1.bias": np.zeros(16, np.float32),
        "conv2.weight": he((32, 16, 3, 3), 144), "conv2.bias": np.zeros(32, np.float32),
        "fc1.weight": he((128, 512), 512), "fc1.bias": np.zeros(128, np.float32),
        "fc2.weight": he((10, 128), 128), "fc2.bias": np.zeros(10, np.float32),
    }


def main():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # pixel values 0..16
    xtr, xte, ytr, yte = train_test_split(images, digits.target.astype(np.uint8), test_size=360,
                                          stratify=digits.target, random_state=0)
    rng = np.random.default_rng(0)
    p = init(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    lr, b1, b2, step = 2e-3, 0.9, 0.999, 0
    x_all = (xtr.astype(np.float32) / 16.0)[:, None]
    for epoch in range(30):
        order = rng.permutation(len(x_all))
        total = 0.0
        for s in range(0, len(order), 32):
            idx = order[s:s + 32]
            logits, cache = forward(p, x_all[idx], keep=True)
            loss, g = backward(p, x_all[idx], ytr[idx].astype(np.int64), cache, logits)
            total += loss * len(idx)
            step += 1
            for k in p:
                m[k] = b1 * m[k] + (1 - b1) * g[k]
                v2[k] = b2 * v2[k] + (1 - b2) * g[k] * g[k]
                mh = m[k] / (1 - b1 ** step)
                vh = v2[k] / (1 - b2 ** step)
                p[k] = (p[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        acc = (forward(p, (xte.astype(np.float32) / 16.0)[:, None]).argmax(1) == yte).mean()
        print(f"epoch {epoch + 1:2d}  loss {total / len(x_all):.4f}  test acc {acc:.4f}",
              file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)
    np.savez(os.path.join(OUT, "digits_cnn.npz"), **p)
    np.savez_compressed(os.path.join(OUT, "digits_test.npz"), images=xte, labels=yte)
    np.savez_compressed(os.path.join(OUT, "digits_train.npz"), images=xtr, labels=ytr)
    print(f"wrote {OUT}/digits_cnn.npz, digits_test.npz and digits_train.npz "
          f"(test accuracy {acc:.4f})")


if __name__ == "__main__":
    main()
