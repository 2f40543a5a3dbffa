@ The timed-call driver. harness.py fills bench_ctl (found by symbol in the ELF) after
@ loading the image and before releasing the core from reset; this code then calls the
@ kernel bench_ctl.reps times.
@
@ Timing: a BKPT right before and right after the BLX marks each call. rp2040py reports a
@ BKPT to harness.py, which samples the emulator's cycle counter there, so the measured
@ window is exactly BLX (the call) + the kernel + its return, and the marks cost nothing.
@ The driver is assembly so that nothing the compiler schedules can land inside the window.

    .syntax unified
    .cpu cortex-m0plus
    .thumb

    @ Must agree with harness.py (MARK_*, CTL_*, MAX_ARGS).
    .equ MARK_START, 0xA0
    .equ MARK_STOP,  0xA1
    .equ MARK_DONE,  0xAD

    .equ CTL_FN,    0           @ kernel address, Thumb bit set
    .equ CTL_REPS,  4
    .equ CTL_NARGS, 8
    .equ CTL_R0,    12          @ r0/r1 as the last call returned them
    .equ CTL_R1,    16
    .equ CTL_ARGS,  20          @ MAX_ARGS words, 32-bit each (ints or buffer addresses)
    .equ MAX_ARGS,  16

    @ In .data, not .bss: the reset handler zeroes .bss after harness.py has written here.
    .data
    .align 2
    .global bench_ctl
bench_ctl:
    .space CTL_ARGS + 4 * MAX_ARGS

    .text
    .global bench_main
    .thumb_func
bench_main:
    ldr r4, =bench_ctl
    ldr r5, [r4, #CTL_REPS]
1:  cmp r5, #0
    beq 2f
    bl timed_call
    subs r5, #1
    b 1b
2:  bkpt #MARK_DONE
3:  b 3b                        @ the runner may step a little past the mark

@ One AAPCS call of bench_ctl.fn with bench_ctl.args. r4 = &bench_ctl (callee-saved, so it
@ survives the kernel). Arguments past the fourth go on the stack, args[4] lowest, with SP
@ 8-byte aligned at the call as the AAPCS requires.
    .thumb_func
timed_call:
    push {r4-r7, lr}
    mov r7, sp                  @ restored after the call, dropping the stack arguments
    ldr r6, [r4, #CTL_NARGS]
    subs r6, #4
    bgt 1f
    movs r6, #0
1:  lsls r6, r6, #2             @ r6 = bytes of stack arguments
    mov r0, sp
    subs r0, r0, r6
    lsrs r0, r0, #3
    lsls r0, r0, #3
    mov sp, r0
    movs r1, #(CTL_ARGS + 16)
    adds r1, r1, r4             @ r1 = &args[4]
    b 3f
2:  ldr r2, [r1, r6]
    str r2, [r0, r6]
3:  subs r6, #4
    bpl 2b
    ldr r6, [r4, #CTL_FN]
    movs r0, #CTL_ARGS
    adds r0, r0, r4
    ldmia r0, {r0-r3}           @ unused argument registers just get zeros
    bkpt #MARK_START
    blx r6
    bkpt #MARK_STOP
    str r0, [r4, #CTL_R0]
    str r1, [r4, #CTL_R1]
    mov sp, r7
    pop {r4-r7, pc}
