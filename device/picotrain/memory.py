"""How many bytes a model + method needs for training, stated before allocating.

    import picotrain as pt
    pt.memory_plan(m, "PRIOT", rate=4)          # -> 11424 (bytes)
    pt.memory_plan(m, pt.NITI, batch=8, detail=True)
    # -> {'activations': ..., 'errors': ..., 'scratch': ..., 'gradients': ...,
    #     'scores': ..., 'subsets': ..., 'total': ...}

The figure is what `Trainer.nbytes()` reports once the trainer exists, and
what the trainer's buffers really occupy (tests/device/test_memory.py checks
both for every method, batch 1 and > 1): activations, the two error buffers,
the shared int32 accumulator and max-pool indices (the model's training
buffers), plus the method's own: int32 gradients and a scratch gradient for
mini-batches, edge-popup scores and PRIOT-S subset bitmaps. The weights are
not in it: they are the model, already in RAM once it is loaded.

The options are checked by the method's own constructor, run in a dry mode
that stops just before anything is allocated (so defaults and validation come
from one place): `memory_plan(m, "PRIOTS", p=2.0)` raises the same ValueError
as `PRIOTS(m, p=2.0)`. The dry run leaves the model as it was.

Every trainer checks the same figure when it is built (`preflight`, called by
Trainer.__init__): if `gc.mem_free()` after `gc.collect()` is below the bytes
it still has to allocate (plus `allowance(model)` for the Python objects
around the buffers), it raises MemoryError naming both numbers, before
allocating anything, instead of failing part-way.

Every method states its own buffers with `_plan_nbytes(self)` -> {category:
bytes}, computed from the options its __init__ has set before calling
Trainer.__init__ (self.batch, self.train_idx, self.model are set by then);
Trainer.nbytes() adds up the same figures, so the two cannot disagree.
"""
import gc

CATEGORIES = ("activations", "errors", "scratch", "gradients", "scores", "subsets")

_dry = False  # set by memory_plan: Trainer.__init__ stops at preflight


class _Planned(Exception):
    pass


def _popcount(bm, n):
    c = 0
    for j in range(n):
        c += (bm[j >> 3] >> (j & 7)) & 1
    return c


def model_plan(model, training=True, static=False):
    """The model's buffers by category, from Model.plan (nothing allocated);
    static: for a method with static shifts (a smaller int32 scratch)."""
    out = {"activations": 0, "errors": 0, "scratch": 0}
    for name, tc, n in model.plan(training, static):
        b = n * (4 if tc == "i" else 1)
        if name.startswith("err"):
            out["errors"] += b
        elif name.startswith("act"):
            out["activations"] += b
        else:  # the int32 accumulator and max-pool argmax indices
            out["scratch"] += b
    return out


def trainer_plan(t):
    """{category: bytes, 'total': bytes} for a trainer that has reached
    Trainer.__init__ (dry or real)."""
    method = t._plan_nbytes()
    out = model_plan(t.model, True, not t.dynamic)
    for k in CATEGORIES:
        out[k] = out.get(k, 0) + method.get(k, 0)
    for k in method:
        if k not in out:
            out[k] = method[k]
    guard = getattr(t, "guard", None)  # a dry run stops before Trainer.__init__ sets it
    if guard is not None and guard.nbytes():
        out["rollback"] = guard.nbytes()  # the copy of the trained tensors (issue 7)
    total = 0
    for k in out:
        total += out[k]
    out["total"] = total
    return out


def _to_allocate(t, plan):
    """Bytes the constructor has still to allocate (what already exists is reused)."""
    model = t.model
    mine = model.nbytes(training=True, static=not t.dynamic)
    need = 0 if model._built >= 2 else mine + model.in_size
    need += plan["total"] - mine
    # scores (and subsets) kept from the model file are already in RAM
    if plan.get("scores") and not t.reset:
        for i in t.train_idx:
            l = model.layers[i]
            if l.scores is not None:
                need -= len(l.scores) * (t.score_bits // 8)
                if l.subset is not None:
                    need -= len(l.subset)
    return need


def allowance(model):
    """Heap for the Python objects around the buffers (tensors, lists, the
    trainer): about 5 KB for a 7-layer model on the x64 unix port, whose
    objects are twice a Pico's; the pre-flight check asks for this on top."""
    return 2048 + 512 * len(model.layers)


def _free_bytes():
    """Free heap after a collection; None where the runtime cannot say (CPython,
    where nothing is collected either)."""
    f = getattr(gc, "mem_free", None)
    if f is None:
        return None
    gc.collect()
    return f()


def preflight(t):
    """Called by Trainer.__init__ before it allocates: the dry run of
    memory_plan ends here; a real construction raises MemoryError when the
    free heap cannot hold what is left to allocate."""
    plan = trainer_plan(t)
    if _dry:
        raise _Planned(plan)
    free = _free_bytes()
    if free is None:
        return
    need = _to_allocate(t, plan)
    extra = allowance(t.model)
    if free < need + extra:
        raise MemoryError("%s needs %d bytes of training buffers (%d still to allocate, and about %d for "
                          "the objects around them) but only %d bytes are free after gc.collect(): try "
                          "batch=1, head_only=True, freeze=[...], PRIOTS, or a smaller model"
                          % (t.name, plan["total"], need, extra, free))


def _resolve(method):
    if isinstance(method, str):
        import picotrain
        cls = getattr(picotrain, method, None)
        from .train import Trainer
        if cls is None or not isinstance(cls, type) or not issubclass(cls, Trainer) or cls is Trainer:
            raise ValueError("unknown training method %r" % (method,))
        return cls
    return method


def memory_plan(model, method, detail=False, **options):
    """Bytes of training buffers `method(model, **options)` would allocate
    (the same figure as that trainer's nbytes()), computed without allocating
    them. method: a name ("NITI", "StaticNITI", "PRIOT", "PRIOTS", ...) or a
    Trainer subclass. detail=True returns {category: bytes, 'total': ...}."""
    global _dry
    cls = _resolve(method)
    frozen = [(l, l.frozen) for l in model.layers if l.has_params]
    _dry = True
    plan = None
    try:
        cls(model, **options)
    except _Planned as p:
        plan = p.args[0]
    finally:
        _dry = False
        for l, f in frozen:  # freeze= and head_only= set these in Trainer.__init__
            l.frozen = f
    return plan if detail else plan["total"]
