@ Minimal Cortex-M0+ startup for the cycle harness: a vector table and a reset handler.
@ harness.py emulates a reset the way the core performs one (MSP from word 0, PC from
@ word 1 of the table); nothing of the Pico SDK or the bootrom runs.

    .syntax unified
    .cpu cortex-m0plus
    .thumb

    .equ VTOR, 0xE000ED08
    .equ MARK_FAULT, 0xAF       @ harness.py: MARK_FAULT

    .section .vectors, "a"
    .align 2
    .global __vectors
__vectors:
    .word __stack_top           @ initial MSP
    .word reset_handler
    .word fault_handler         @ NMI
    .word fault_handler         @ HardFault

    .text
    .global reset_handler
    .thumb_func
reset_handler:
    cpsid i                     @ nothing but the kernel may run between the timing marks
    ldr r0, =VTOR               @ a fault must land in fault_handler, not in stale vectors
    ldr r1, =__vectors
    str r1, [r0]
    ldr r0, =__bss_start
    ldr r1, =__bss_end
    movs r2, #0
1:  cmp r0, r1
    bhs 2f
    stmia r0!, {r2}
    b 1b
2:  bl bench_main               @ does not return: it ends at the "done" breakpoint

    .thumb_func
fault_handler:
    bkpt #MARK_FAULT
    b fault_handler
