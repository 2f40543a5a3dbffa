@ Loops whose cycle counts are known by construction from the Cortex-M0+ TRM (ARM DDI 0484,
@ table 3.1: zero wait states, single-cycle multiplier as on the RP2040).
@
@ Every function takes r0 = n >= 1 iterations; those that touch memory take r1 = a word-
@ aligned 32-byte buffer. The harness window is BLX (2) + function + return, so each loop
@ costs  n * body + fixed  where the loop branch is taken n-1 times (bne: 2 taken, 1 not).
@ loops.py holds the same counts as data; keep the two in step.

    .syntax unified
    .cpu cortex-m0plus
    .thumb

    @ body 8 + subs 1 + bne 2 = 11;  fixed: blx 2 + bx 2 - 1 (last bne) = 3
    .macro ADDS_LOOP name
    .global \name
    .thumb_func
\name:
1:  .rept 8
    adds r2, r2, #1
    .endr
    subs r0, #1
    bne 1b
    bx lr
    .endm

    .text
    ADDS_LOOP mb_adds

    @ The same loop executed from XIP flash (see link.ld).
    .section .xip_text, "ax"
    ADDS_LOOP mb_adds_xip

    .text

    @ MULS is 1 cycle with the RP2040's fast multiplier: 11 / iteration, fixed 3
    .global mb_muls
    .thumb_func
mb_muls:
1:  .rept 8
    muls r2, r3
    .endr
    subs r0, #1
    bne 1b
    bx lr

    @ LDR 2: 8*2 + 3 = 19 / iteration, fixed 3
    .global mb_ldr
    .thumb_func
mb_ldr:
1:  .rept 8
    ldr r2, [r1]
    .endr
    subs r0, #1
    bne 1b
    bx lr

    @ LDRSB register offset (the int8 load a dot product uses) 2: 19 / iteration,
    @ fixed 3 + movs 1 = 4
    .global mb_ldrsb
    .thumb_func
mb_ldrsb:
    movs r3, #0
1:  .rept 8
    ldrsb r2, [r1, r3]
    .endr
    subs r0, #1
    bne 1b
    bx lr

    @ STR 2: 19 / iteration, fixed 3
    .global mb_str
    .thumb_func
mb_str:
1:  .rept 8
    str r2, [r1]
    .endr
    subs r0, #1
    bne 1b
    bx lr

    @ LDM of 5 registers 1+5 = 6: 2*(mov 1 + 6) + 3 = 17 / iteration;
    @ fixed: push {r4-r7} 5 + pop {r4-r7} 5 + 3 = 13
    .global mb_ldm
    .thumb_func
mb_ldm:
    push {r4-r7}
1:  .rept 2
    mov r2, r1
    ldmia r2!, {r3-r7}
    .endr
    subs r0, #1
    bne 1b
    pop {r4-r7}
    bx lr

    @ STM of 5 registers 1+5 = 6: 17 / iteration, fixed 13 (as mb_ldm)
    .global mb_stm
    .thumb_func
mb_stm:
    push {r4-r7}
1:  .rept 2
    mov r2, r1
    stmia r2!, {r3-r7}
    .endr
    subs r0, #1
    bne 1b
    pop {r4-r7}
    bx lr

    @ Unconditional B to the next instruction 2: 8*2 + 3 = 19 / iteration, fixed 3
    .global mb_b
    .thumb_func
mb_b:
1:  .rept 8
    b .+2
    .endr
    subs r0, #1
    bne 1b
    bx lr

    @ Conditional branch not taken 1: cmp 1 + 8 + 3 = 12 / iteration, fixed 3.
    @ r0 >= 1 here, so Z is clear and no beq is taken (one taken would end the call early).
    .global mb_bcc_not_taken
    .thumb_func
mb_bcc_not_taken:
1:  cmp r0, #0
    .rept 8
    beq 9f
    .endr
    subs r0, #1
    bne 1b
9:  bx lr

    @ BL 3 + leaf BX 2 = 5 per call: 4*5 + 3 = 23 / iteration;
    @ fixed: mov 1 + blx 2 + bx 2 - 1 = 4
    .global mb_bl
    .thumb_func
mb_bl:
    mov r12, lr
1:  .rept 4
    bl leaf
    .endr
    subs r0, #1
    bne 1b
    bx r12

    .thumb_func
leaf:
    bx lr

    @ PUSH/POP of 4 low registers, 1+4 = 5 each: 2*(5+5) + 3 = 23 / iteration, fixed 3
    .global mb_pushpop
    .thumb_func
mb_pushpop:
1:  .rept 2
    push {r4-r7}
    pop {r4-r7}
    .endr
    subs r0, #1
    bne 1b
    bx lr

    @ A minimal stack frame, as every non-leaf C function has: BL 3 + PUSH {r4, lr} 1+2 = 3
    @ + POP {r4, pc} 3+2 = 5 = 11 per call: 4*11 + 3 = 47 / iteration; fixed 4 (as mb_bl)
    .global mb_call_frame
    .thumb_func
mb_call_frame:
    mov r12, lr
1:  .rept 4
    bl frame_leaf
    .endr
    subs r0, #1
    bne 1b
    bx r12

    .thumb_func
frame_leaf:
    push {r4, lr}
    pop {r4, pc}

    @ LDR through the single-cycle IO port (SIO CPUID) 1: 8 + 3 = 11 / iteration;
    @ fixed: literal LDR 2 + 3 = 5
    .global mb_ldr_sio
    .thumb_func
mb_ldr_sio:
    ldr r1, =0xD0000000
1:  .rept 8
    ldr r2, [r1]
    .endr
    subs r0, #1
    bne 1b
    bx lr
