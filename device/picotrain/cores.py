"""Two cores: the big kernels of a step split across the RP2040's two cores.

    picotrain.use_cores(2)   # start the worker thread (once) and split from now on
    picotrain.use_cores(1)   # one core again (the worker stays, parked on a lock)

MicroPython runs a `_thread` on the RP2040's second core. use_cores(2)
starts one worker thread and rebinds every kernel of kernels.RANGED to a
splitter: a call hands the upper half of its channels to the worker through
preallocated state and two locks, computes the lower half itself and waits.
Each output item is computed by the same arithmetic as in the whole call
and saturation counts are summed, so the bits are those of one core.

Nothing allocates per call: the arguments go into a preallocated list, the
call is spelled out per arity (f(*args) would allocate) and the splitters
are built once. The worker holds its own heap lock (MicroPython's is per
thread), so an allocation there raises instead of passing silently; an
error in the worker is raised again in the caller.
"""
from . import kernels as K

try:
    import _thread
except ImportError:
    _thread = None
try:
    from micropython import heap_lock
except ImportError:  # CPython
    heap_lock = None

SLOTS = 16  # the most arguments of a ranged kernel (14) plus its c0, c1


class _Job:
    """The hand-off between the caller and the worker."""

    def __init__(self):
        self.args = [None] * SLOTS  # the call's arguments
        self.f = None               # the kernel
        self.n = 0                  # its own argument count (without c0, c1)
        self.c0 = 0                 # the worker's channel range
        self.c1 = 0
        self.result = None          # the worker's return value
        self.error = None           # the exception the worker's half raised
        self.go = _thread.allocate_lock()    # released: the worker starts
        self.done = _thread.allocate_lock()  # released: the worker finished
        self.go.acquire()
        self.done.acquire()


_job = None


def _call(f, n, a, c0, c1):
    """f(a[0], ..., a[n - 1], c0, c1) for the arities of kernels.RANGED."""
    if n == 4:
        return f(a[0], a[1], a[2], a[3], c0, c1)
    if n == 5:
        return f(a[0], a[1], a[2], a[3], a[4], c0, c1)
    if n == 8:
        return f(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], c0, c1)
    if n == 9:
        return f(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], c0, c1)
    if n == 10:
        return f(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], c0, c1)
    if n == 13:
        return f(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], c0, c1)
    if n == 14:
        return f(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], c0, c1)
    raise ValueError("cores: no call for a kernel of %d arguments" % n)


def _worker(job):
    if heap_lock is not None:
        heap_lock()  # this thread's: the worker never allocates
    while True:
        job.go.acquire()
        try:
            job.result = _call(job.f, job.n, job.args, job.c0, job.c1)
        except BaseException as e:  # noqa: B036 (raised again in the caller, never a hang)
            job.error = e
        job.done.release()


def _split(f, n, count):
    """The call in _job.args on channels [0, count): the lower half here, the
    upper half on the worker; the sum of the two results (counts) or None."""
    job = _job
    if count < 2:
        return _call(f, n, job.args, 0, count)
    mid = count >> 1
    job.f = f
    job.n = n
    job.c0 = mid
    job.c1 = count
    job.go.release()
    try:
        r = _call(f, n, job.args, 0, mid)
    finally:
        job.done.acquire()  # whatever happened here, the worker's half is over
        e = job.error
        job.error = None
    if e is not None:
        raise e
    return None if r is None else r + job.result


def _splitter(f, n, ci):
    """The split form of kernel f (n arguments of its own, the channel count at
    position ci). A call that gives its own c0 (and c1) runs as it is.

    f, n, ci and the argument list are bound as defaults, not closed over: in
    MicroPython a closure called with more than five arguments allocates
    (py/objclosure.c), a plain function does not."""
    def split(a0, a1, a2, a3, a4=None, a5=None, a6=None, a7=None, a8=None, a9=None, a10=None,
              a11=None, a12=None, a13=None, a14=None, a15=None, f=f, n=n, ci=ci, args=_job.args):
        args[0] = a0
        args[1] = a1
        args[2] = a2
        args[3] = a3
        args[4] = a4
        args[5] = a5
        args[6] = a6
        args[7] = a7
        args[8] = a8
        args[9] = a9
        args[10] = a10
        args[11] = a11
        args[12] = a12
        args[13] = a13
        args[14] = a14
        args[15] = a15
        if args[n] is not None:
            return _call(f, n, args, args[n], args[n + 1])
        return _split(f, n, args[ci])

    return split


def split_kernels(g):
    """Rebind the ranged kernels of the namespace g (kernels.py's) to splitters."""
    for name in K.RANGED:
        n, ci = K.RANGED[name]
        g[name] = _splitter(g[name], n, ci)


def use_cores(n):
    """Run the big kernels on n cores (1 or 2); returns n. The first
    use_cores(2) starts the worker thread."""
    global _job
    if n not in (1, 2):
        raise ValueError("use_cores: n must be 1 or 2, got %r" % (n,))
    if n == 2 and _job is None:
        if _thread is None:
            raise ValueError("use_cores: this Python has no _thread, so one core only")
        _job = _Job()
        _thread.start_new_thread(_worker, (_job,))
    K._cores = n
    K.use(K._active)
    return n
