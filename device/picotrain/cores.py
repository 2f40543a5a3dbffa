"""Two cores: the big kernels of a step split across the RP2040's two cores.

    picotrain.use_cores(2)   # start the worker thread (once) and split from now on
    picotrain.use_cores(1)   # one core again (the worker stays, parked on a lock)

MicroPython runs a `_thread` on the RP2040's second core. use_cores(2)
starts one worker thread and rebinds every kernel of kernels.RANGED (and
RANGED_SCRATCH) to a splitter: a call with enough work hands the upper half
of its channels to the worker through preallocated state and two locks,
computes the lower half itself and waits. The fused static convolutions
also need an int32 scratch of the worker's own: a model built for a static
method with two cores on allocates it (Model.plan's "acc2"; call
use_cores(2) before building the trainer, or those convolutions stay on one
core). Each output item is computed by the same arithmetic
as in the whole call and saturation counts are summed, so the bits are
those of one core.

Nothing allocates per call. A splitter has the kernel's own parameters, so
a call that stays on one core costs one Python call more, and the worker's
call spells the arguments out (f(*args) would allocate); both are compiled
once per kernel, in use_cores, from the text below (one template rather
than eleven hand-written twins). The worker holds its own heap lock
(MicroPython's is per thread), so an allocation there raises instead of
passing silently; an error in the worker is raised again in the caller.
"""
from array import array

from . import kernels as K

try:
    import _thread
except ImportError:
    _thread = None
try:
    from micropython import heap_lock
except ImportError:  # CPython
    heap_lock = None

SLOTS = 17  # the most arguments of a ranged kernel
# Below this many multiply-accumulates (estimated, kernels.RANGED) a call stays
# on one core: handing half of it over costs tens of thousands of M0+ cycles
# of interpreter work (benchmarks/RESULTS.md, "Two cores"), about what half of
# a call of 16,384 MACs at 3 to 5 cycles each saves.
MIN_WORK = 16384

# The worker's call of a kernel's upper half, and the kernel's splitter. {a}: the
# kernel's own parameters a0, a1, ...; {count}, {work}: its channel count and
# estimated work as expressions of them; {stores}: one line per parameter,
# into the preallocated list; {items}: args[0], args[1], ... Everything is
# bound as a default, not closed over: in MicroPython a closure called with
# more than five arguments allocates (py/objclosure.c), a plain function not.
_TEMPLATE = """
def half(args, c0, c1, f=f):
    return f({items}, c0, c1)

def split({a}, c0=0, c1=None, f=f, job=job, half=half, args=args, start=start, wait=wait):
    count = {count}
    if c0 or c1 is not None or count < 2 or {work} < job.min_work{no_scratch}:
        return f({a}, c0, c1)
{stores}
    mid = count >> 1
    job.half = half
    job.c0 = mid
    job.c1 = count
    start()
    try:
        r = f({a}, 0, mid)
    finally:
        wait()  # whatever happened here, the worker's half is over
        e = job.error
        job.error = None
    if e is not None:
        raise e
    return None if r is None else r + job.result
"""


class _Job:
    """The hand-off between the caller and the worker."""

    def __init__(self):
        self.args = [None] * SLOTS  # the call's arguments
        self.half = None            # the worker's call (a kernel's `half`)
        self.c0 = 0                 # the worker's channel range
        self.c1 = 0
        self.result = None          # the worker's return value
        self.error = None           # the exception the worker's half raised
        self.min_work = MIN_WORK    # use_cores' min_work
        self.scratch = array("i")   # the worker's int32 scratch (lend_scratch)
        self.go = _thread.allocate_lock()    # released: the worker starts
        self.done = _thread.allocate_lock()  # released: the worker finished
        self.go.acquire()
        self.done.acquire()


_job = None


def _worker(job):
    if heap_lock is not None:
        heap_lock()  # this thread's: the worker never allocates
    while True:
        job.go.acquire()
        try:
            job.result = job.half(job.args, job.c0, job.c1)
        except BaseException as e:  # noqa: B036 (raised again in the caller, never a hang)
            job.error = e
        job.done.release()


def _splitter(f, n, ci, sizes, scale, scratch=None):
    """The split form of kernel f (kernels.RANGED: n arguments of its own, the
    channel count at position ci, the work from sizes and scale; scratch: the
    position of an int32 scratch the worker must not share, kernels.RANGED_SCRATCH).
    A call that gives its own c0, c1 runs as it is; a call with fewer than two
    channels, less work than use_cores' min_work, or a scratch larger than the
    worker's stays on this core."""
    params = ", ".join("a%d" % i for i in range(n))
    work = " * ".join(["%d" % scale] + ["a%d" % p for p in sizes])
    stores = "\n".join("    args[%d] = %s" % (i, "job.scratch" if i == scratch else "a%d" % i) for i in range(n))
    items = ", ".join("args[%d]" % i for i in range(n))
    no_scratch = "" if scratch is None else " or len(job.scratch) < len(a%d)" % scratch
    space = {"f": f, "job": _job, "args": _job.args, "start": _job.go.release, "wait": _job.done.acquire}
    exec(_TEMPLATE.format(a=params, count="a%d" % ci, work=work, stores=stores, items=items,
                          no_scratch=no_scratch), space)
    return space["split"]


def split_kernels(mod):
    """Rebind the ranged kernels of module mod (kernels.py) to splitters
    (setattr, to keep the module's keys interned: kernels.use)."""
    for name in K.RANGED:
        setattr(mod, name, _splitter(getattr(mod, name), *K.RANGED[name]))
    for name in K.RANGED_SCRATCH:
        setattr(mod, name, _splitter(getattr(mod, name), *K.RANGED_SCRATCH[name]))


def lend_scratch(buf):
    """Model.build's int32 scratch for the worker's halves of the fused
    convolutions (the caller's halves use the model's own)."""
    if _job is not None:
        _job.scratch = buf


def use_cores(n, min_work=MIN_WORK):
    """Run the big kernels on n cores (1 or 2); returns n. The first
    use_cores(2) starts the worker thread. Calls estimated below min_work
    multiply-accumulates stay on one core (0: split every call)."""
    global _job
    if n not in (1, 2):
        raise ValueError("use_cores: n must be 1 or 2, got %r" % (n,))
    if not isinstance(min_work, int) or min_work < 0:
        raise ValueError("use_cores: min_work must be an int >= 0, got %r" % (min_work,))
    if n == 2 and _job is None:
        if _thread is None:
            raise ValueError("use_cores: this Python has no _thread, so one core only")
        _job = _Job()
        _thread.start_new_thread(_worker, (_job,))
    if _job is not None:
        _job.min_work = min_work
    K._cores = n
    K.use(K._active)
    return n
