"""Collapse guard: stop training that has gone bad and go back to the last good state.

    import picotrain as pt
    hist = t.fit(data, epochs=30, guard=pt.Guard(sat=0.01, drop=0.2))
    hist[-1].get("collapse")   # {'why': ..., 'back_to': ..., ...} when it tripped

Static scales can make training collapse: the weights outgrow the calibrated
shifts, outputs and errors saturate, accuracy falls and does not come back
(static NITI in the PRIOT paper). A Guard judges the run at every epoch end,
and every `every` samples if asked (at mini-batch boundaries), on what
happened since its previous check:

- saturation: the share of the values the layers with parameters computed
  (their int8 outputs, and the errors they sent to their inputs) that
  saturated, from the layers' sat_fwd and sat_bwd counters. Clipped updates
  (sat_upd) are not counted: PRIOT's scores pile up at their limits by design.
- an accuracy cliff: the training accuracy of the epoch so far fell more than
  `drop` below the best epoch's (judged from the second epoch on).

A check that passes makes the state good. On a collapse the trainer goes back
to the last good state, and fit stops (stop=True) or goes on with the next
epoch from there; the epoch's history row gets "collapse" and its log line
says why and where to.

Where the good state lives:

- without a checkpoint: in RAM, a copy of what the method trains (the
  trained layers' weights and exponents, PRIOT's scores, Tin-Tin's exponents,
  partial FQT's update counts: Trainer._trained) plus its PRNG state, taken
  at every check that passes. The copy costs its bytes once (nbytes(); the
  trainer's nbytes() counts them while fit uses the guard); making it
  and checking allocate a little, at checks only: the steps in between
  allocate nothing.
- with fit(checkpoint=...): the checkpoint files. Before every checkpoint
  save the guard checks, and saves only a state that passes, so the newest
  checkpoint is always good (a fresh run first saves its starting state).
  A rollback loads it (its parameters are in RAM twice for a moment) and
  copies it into the live model. Nothing is kept in RAM.
"""
from .layers import _prod
from .train import method_state, restore_method_state


def _fraction(name, v):
    if v is not None and not 0 < v <= 1:
        raise ValueError("Guard: %s must be a fraction in (0, 1] or None, got %r" % (name, v))
    return v


class Guard:
    """Watch a fit for a collapse and roll back to the last good state.

    sat: the largest share of saturated outputs and errors accepted (0.01:
    1 %), None: not judged. drop: the largest fall of training accuracy
    below the best epoch's (0.2: 20 points), None: not judged. every: also
    check every this many samples (0: at epoch ends only). stop: after a
    rollback, end the fit (True) or go on from the good state (False).
    events: every collapse seen, as in the history rows.
    """

    def __init__(self, sat=0.01, drop=0.2, every=0, stop=True):
        if sat is None and drop is None:
            raise ValueError("Guard: sat and drop are both None, so nothing would be judged")
        if not isinstance(every, int) or every < 0:
            raise ValueError("Guard: every must be an int >= 0 (samples between checks), got %r" % (every,))
        self.sat = _fraction("sat", sat)
        self.drop = _fraction("drop", drop)
        self.every = every
        self.stop = stop
        self.events = []
        self.last_sat = 0.0
        self.best = None
        self._ck = None
        self._owner = None       # the trainer whose state the RAM copy holds
        self._copy = None        # RAM copies of its trained arrays
        self._copy_nbytes = 0
        self._numbers = None
        self._state = None
        self._where = None
        self._trip = None        # what the failed check found, until epoch_end rolls back
        self._per_sample = 1     # values per sample the saturation share is taken of (start)
        self._ep = self._ep_n = self._ep_ok = 0   # the epoch, its samples and right answers
        self._n = self._base = 0                  # samples and saturations at the last check

    # ------------------------------------------------------ what it costs --
    def nbytes(self):
        """Bytes of the RAM copy this guard holds (0 with a checkpoint)."""
        return self._copy_nbytes

    def copy_nbytes(self, t):
        """Bytes a RAM copy of trainer t's trained tensors takes."""
        n = 0
        for _, b in t._trained(t.model)[0]:
            n += b
        return n

    # ------------------------------------------------------- called by fit --
    def start(self, t, checkpoint):
        """Before the first epoch: the state as it is now is the good one."""
        self._ck = checkpoint
        self.best, self._trip, self.last_sat = None, None, 0.0
        layers = t.model.layers
        per = 0
        for i, l in enumerate(layers):
            if l.has_params:
                per += _prod(l.out_shape) + (_prod(l.in_shape) if i > t.lowest else 0)
        self._per_sample = per
        self._ep = 0
        self._ep_n = self._ep_ok = 0
        self._mark(t)
        if checkpoint is not None:
            self._copy, self._copy_nbytes, self._owner = None, 0, None
            if checkpoint.last is None:
                checkpoint.save(t)  # a fresh run: its start is the first good checkpoint
            return
        if self._owner is not t:  # one copy per trainer, made once
            self._allocate(t)
        self._keep(t, "the start")

    def watch(self, t, data, ep):
        """data, counted: after each step, the samples and right answers, and
        a check every `every` samples; a collapse ends the epoch there."""
        self._ep = ep
        self._ep_n = self._ep_ok = 0
        self._mark(t)
        res = t.result
        every = self.every
        for item in data:
            yield item
            # here the trainer has stepped on item
            self._n += 1
            self._ep_n += 1
            self._ep_ok += res[1]
            if every and self._n >= every and t.count % t.batch == 0 and not self.check(t):
                return

    def check(self, t, epoch_end=False):
        """Judge the samples since the previous check: True when the state is
        good (kept as the one to roll back to), False on a collapse. Also
        asked by the checkpoint before each save."""
        if self._trip is not None:
            return False
        if self._n:
            sat = (_saturated(t) - self._base) / (self._n * self._per_sample)
            acc = self._ep_ok / self._ep_n
            self.last_sat = sat
            why = None
            if self.sat is not None and sat > self.sat:
                why = "%.2f%% of outputs and errors saturated (limit %.2f%%)" % (100 * sat, 100 * self.sat)
            elif self.drop is not None and self.best is not None and acc < self.best - self.drop:
                why = "training accuracy %.1f%% is more than %.1f points below the best epoch's %.1f%%" % (
                    100 * acc, 100 * self.drop, 100 * self.best)
            if why is not None:
                self._trip = {"epoch": self._ep + 1, "sample": self._ep_n, "why": why, "sat": sat,
                              "train_acc": acc}
                return False
            if self._ck is None:
                self._keep(t, "the end of epoch %d" % (self._ep + 1) if epoch_end
                           else "epoch %d, sample %d" % (self._ep + 1, self._ep_n))
            self._mark(t)
        if epoch_end and self._ep_n:
            acc = self._ep_ok / self._ep_n
            if self.best is None or acc > self.best:
                self.best = acc
        return True

    def epoch_end(self, t):
        """After an epoch: check it (unless a check within it tripped); on a
        collapse roll back and return the event, else None."""
        if self._trip is None and self.check(t, True):
            return None
        ev = self._trip
        self._trip = None
        ev["back_to"] = self._roll_back(t)
        self.events.append(ev)
        self._mark(t)
        return ev

    # ----------------------------------------------------------- the state --
    def _mark(self, t):
        self._n = 0
        self._base = _saturated(t)

    def _allocate(self, t):
        from .memory import _free_bytes
        self._copy, self._copy_nbytes, self._owner = None, 0, None  # the old copy can go first
        need = self.copy_nbytes(t)
        free = _free_bytes()
        if free is not None and free < need:
            raise MemoryError("Guard: a copy of the trained tensors to roll back to needs %d bytes, %d are free: "
                              "give fit a checkpoint= to roll back from flash instead" % (need, free))
        self._copy = [a[:] for a, _ in t._trained(t.model)[0]]
        self._copy_nbytes, self._owner = need, t

    def _keep(self, t, where):
        arrays, numbers = t._trained(t.model)
        for (a, _), c in zip(arrays, self._copy):
            c[:] = a
        self._numbers = [getattr(o, k) for o, k in numbers]
        self._state = method_state(t)
        self._where = where

    def _roll_back(self, t):
        """Put the last good state back into t; returns where it came from."""
        arrays, numbers = t._trained(t.model)
        if self._ck is None:
            for (a, _), c in zip(arrays, self._copy):
                a[:] = c
            for (o, k), v in zip(numbers, self._numbers):
                setattr(o, k, v)
            restore_method_state(t, self._state)
            return self._where
        found = self._ck.newest()
        if found is None:
            raise OSError("Guard: no readable checkpoint of %s to roll back to" % self._ck.path)
        model, info, path = found
        src_arrays, src_numbers = t._trained(model)
        for (a, _), (s, _) in zip(arrays, src_arrays):
            a[:] = s
        for (o, k), (so, sk) in zip(numbers, src_numbers):
            setattr(o, k, getattr(so, sk))
        restore_method_state(t, info)
        return "the checkpoint %s (%d epochs + %d samples done)" % (path, info["epoch"], info["sample"])


def _saturated(t):
    n = 0
    for l in t.model.layers:
        if l.has_params:
            n += l.sat_fwd + l.sat_bwd
    return n
