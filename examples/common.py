"""What the example scripts share. Importing it puts the repository's packages
(picotrain from device/, host_tools) on sys.path and keeps BLAS to one thread
per process (the scripts choose their parallelism with --jobs); the sample
order of every example's training runs is shuffled_epochs'."""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "device"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import picotrain as pt  # noqa: E402


def shuffled_epochs(trainer, train, epochs, seed):
    """Train `epochs` passes over the samples `train`, each in a new order from
    XorShift32(1000 + seed); after each pass yields (epoch, from 1; training
    accuracy; seconds the pass took)."""
    order = list(range(len(train)))
    shuffler = pt.XorShift32(1000 + seed)
    for ep in range(epochs):
        shuffler.shuffle(order)
        data = [train[j] for j in order]
        t0 = time.time()
        acc = trainer.epoch(data)
        yield ep + 1, acc, time.time() - t0
