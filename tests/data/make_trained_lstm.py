"""Writes tests/data/trained_lstm_digits.npz: a small LSTM trained on a real dataset, for the accuracy tests.

The data: scikit-learn's bundled handwritten digits (load_digits, 1797 images of 8x8 pixels,
values 0-16). An image is read one row per step (8 features), images follow each other in a stream,
and the LSTM (hidden 16) with a linear read-out learns to name the digit being read at every step,
so it must remember across the rows of an image and forget at the next one. Trained with PyTorch
for a few seconds; the file keeps the LSTM's weights (PyTorch layout, float32 as trained) and a few long test
streams of held-out images (uint8), to run with no scikit-learn or training at test time.

    pip install scikit-learn torch && python tests/data/make_trained_lstm.py
"""

import os

import numpy as np
import torch
from sklearn.datasets import load_digits

H, IMAGES_PER_STREAM, STREAMS = 16, 64, 4  # test streams of 64 images: 512 steps


def streams(images, labels, n, per, rng):
    """n streams of `per` random images each: (n, per*8, 8) pixel rows and (n, per*8) labels."""
    idx = rng.integers(0, len(images), size=(n, per))
    x = images[idx].reshape(n, per * 8, 8)  # (n, per*8, 8): image rows one after the other
    y = np.repeat(labels[idx], 8, axis=1)  # (n, per*8)
    return x, y


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    digits = load_digits()
    images = digits.images.astype(np.float32)  # (1797, 8, 8), 0..16
    labels = digits.target
    train, test = np.arange(0, 1500), np.arange(1500, len(images))
    lstm = torch.nn.LSTM(8, H, batch_first=True)
    head = torch.nn.Linear(H, 10)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(600):
        x, y = streams(images[train], labels[train], 32, 8, rng)
        out, _ = lstm(torch.from_numpy(x / 16.0))
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, 10), torch.from_numpy(y).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt, yt = streams(images[test], labels[test], STREAMS, IMAGES_PER_STREAM, rng)
    with torch.no_grad():
        out, _ = lstm(torch.from_numpy(xt / 16.0))
        pred = head(out).argmax(-1).numpy()
    last_row = (np.arange(xt.shape[1]) % 8) == 7  # the prediction once the whole image has been read
    accuracy = np.mean(pred[:, last_row] == yt[:, last_row])
    print(f"loss {loss.item():.3f}; held-out accuracy at each image's last row {accuracy:.3f}")
    sd = {k: v.detach().numpy() for k, v in lstm.state_dict().items()}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trained_lstm_digits.npz")
    np.savez_compressed(path, x_uint8=xt.astype(np.uint8), scale=np.float64(1 / 16.0), **sd)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
