"""Float pretraining of the reference models on the host (PyTorch, CPU).

The float model sees exactly what the int8 model will see on the device:
x = (pixel >> 1) / 128, i.e. the int8 input pixel >> 1 at exponent -7.
Training uses the `pretrain` split (upright images) and reports accuracy on
the held-out `transfer-test` split, upright and at any extra angles.
Runs are deterministic for a given seed (one thread, seeded init and order).
"""

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from host_tools import datasets, models
from picotrain.data import IMAGE_EXP

DEFAULT_MODEL = {"mnist": "tiny_cnn", "digits": "tiny_cnn_digits"}
# Settings found by a small sweep over seeds (docs/DATASETS.md has the results):
# MNIST's 7,952 images reach ~98% held-out in 8 epochs (~7 s on one core);
# the 1,285 digits give few steps per epoch, so smaller batches and a higher rate.
DEFAULTS = {
    "mnist": dict(epochs=8, batch_size=32, lr=3e-3),
    "digits": dict(epochs=20, batch_size=8, lr=1e-2),
}


def to_input(images):
    """uint8 (N, C, H, W) -> float32 tensor of the device's input values."""
    return torch.from_numpy((images >> 1).astype(np.float32) * 2.0 ** IMAGE_EXP)


def accuracy(model, x, y, batch=1024):
    model.eval()
    with torch.no_grad():
        correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                      for i in range(0, len(x), batch))
    return correct / len(x)


def train(model, x, y, epochs, batch_size, lr, seed):
    """Adam with cosine decay on float inputs x, labels y; return the last epoch's accuracy."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # Cosine decay to zero: the last epochs settle instead of bouncing at a high rate.
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        seen = correct = 0
        total_loss = 0.0
        bar = tqdm(torch.randperm(len(x), generator=order_gen).split(batch_size),
                   desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=None, leave=False)
        for idx in bar:
            logits = model(x[idx])
            loss = loss_fn(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    return correct / seen


def pretrain(model_name=None, source="mnist", epochs=None, seed=0, mnist_dir=None,
             out=None, eval_angles=(), batch_size=None, lr=None):
    """Train, evaluate, and (if `out`) save the checkpoint; return it as a dict.

    None for model_name, epochs, batch_size or lr means the source's default.
    The checkpoint: {"arch", "state_dict", "input_exp": -7, "meta": {...}},
    with the held-out accuracies in meta["test_accuracy"] keyed by angle.
    """
    if source not in DEFAULTS:
        raise ValueError(f"unknown source {source!r}; choose from {tuple(DEFAULTS)}")
    model_name = model_name or DEFAULT_MODEL[source]
    epochs = DEFAULTS[source]["epochs"] if epochs is None else epochs
    batch_size = batch_size or DEFAULTS[source]["batch_size"]
    lr = lr or DEFAULTS[source]["lr"]
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}")

    images, labels = datasets.load_split(source, "pretrain", mnist_dir)
    if images.shape[1:] != models.input_shape(model_name):
        raise ValueError(f"{model_name} takes {models.input_shape(model_name)} inputs; "
                         f"{source} images are {images.shape[1:]}")
    torch.manual_seed(seed)
    model = models.build(model_name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-reproducible, and these small convs gain little from threads
    try:
        start = time.perf_counter()
        train_acc = train(model, to_input(images), torch.from_numpy(labels.astype(np.int64)),
                          epochs, batch_size, lr, seed)
        train_seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)

    test = {}
    for angle in (0, *eval_angles):
        timg, tlab = datasets.load_split(source, "transfer-test", mnist_dir, angle=angle)
        test[angle] = accuracy(model, to_input(timg), torch.from_numpy(tlab.astype(np.int64)))
    checkpoint = {
        "arch": model_name,
        "state_dict": model.state_dict(),
        "input_exp": IMAGE_EXP,
        "meta": {
            "source": source, "train_split": "pretrain", "test_split": "transfer-test",
            "n_train": len(images), "epochs": epochs, "seed": seed, "batch_size": batch_size,
            "lr": lr, "optimizer": "Adam, cosine decay", "train_accuracy": train_acc,
            "test_accuracy": test, "train_seconds": round(train_seconds, 2),
            "torch": str(torch.__version__),  # a plain str: loads with weights_only=True
        },
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, out)
    return checkpoint
