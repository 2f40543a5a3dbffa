"""The hand counts of loops.S, as data for the tests and the report.

A call of loop `name` with n iterations costs, per the Cortex-M0+ TRM,
    per_iteration * n + fixed
cycles (BLX and return included); loops.S derives each number in a comment. rp2040py is
expected to report that plus emulator_delta * n, where a known deviation of its timing
model from the TRM is documented here (README.md, "Timing fidelity").
"""

from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "loops.S"


@dataclass(frozen=True)
class Loop:
    name: str
    isolates: str
    per_iteration: int
    fixed: int
    buffer: bool = False  # takes a 32-byte buffer in r1
    emulator_delta: int = 0  # rp2040py minus TRM, per iteration
    trm_traceable: bool = True  # harness.trm_cycles prices every load at 2 (no IOPORT)

    def trm(self, n):
        return self.per_iteration * n + self.fixed

    def emulator(self, n):
        return self.trm(n) + self.emulator_delta * n


LOOPS = (
    Loop("mb_adds", "ADDS (1)", 11, 3),
    Loop("mb_muls", "MULS, fast multiplier (1)", 11, 3),
    Loop("mb_ldr", "LDR from SRAM (2)", 19, 3, buffer=True),
    Loop("mb_ldrsb", "LDRSB register offset (2)", 19, 4, buffer=True),
    Loop("mb_str", "STR to SRAM (2)", 19, 3, buffer=True),
    Loop("mb_ldm", "LDM of 5 registers (1+N = 6)", 17, 13, buffer=True),
    Loop("mb_stm", "STM of 5 registers (1+N = 6)", 17, 13, buffer=True),
    Loop("mb_b", "B, always taken (2)", 19, 3),
    Loop("mb_bcc_not_taken", "B<cond> not taken (1)", 12, 3),
    Loop("mb_bl", "BL (3) + BX LR (2)", 23, 4),
    Loop("mb_pushpop", "PUSH/POP of 4 low registers (1+N = 5)", 23, 3),
    # rp2040py leaves LR out of PUSH's N and PC out of POP's N: 1 cycle short each, 2 per
    # call frame, 4 frames per iteration.
    Loop("mb_call_frame", "BL + PUSH {r4, lr} (3) + POP {r4, pc} (5)", 47, 4,
         emulator_delta=-8),
    Loop("mb_ldr_sio", "LDR from the SIO single-cycle IO port (1)", 11, 5, trm_traceable=False),
    # Not a TRM row: what executing from flash costs depends on the XIP cache, which
    # rp2040py does not model; it charges exactly what the SRAM copy (mb_adds) costs.
    Loop("mb_adds_xip", "mb_adds executed from XIP flash", 11, 3),
)
