@ Every ARM relocation kind natmod/mpy_ld handles, for test_natmod_relocs.py: linked by
@ mpy_ld and by GNU ld, the two images must agree. Never executed.
    .syntax unified
    .cpu cortex-m3
    .thumb

    .text
    .global mpy_init
    .type mpy_init, %function
    .thumb_func
mpy_init:
    push {r4, lr}
    bl far                          @ R_ARM_THM_CALL, forward over 5 KB
    b.w far                         @ R_ARM_THM_JUMP24
    pop {r4, pc}
    .align 2
.Lpic:
    .word _GLOBAL_OFFSET_TABLE_ - (.Lpic + 4)  @ R_ARM_BASE_PREL
    .word mp_fun_table(GOT)         @ R_ARM_GOT_BREL: a firmware symbol
    .word counter(GOT)              @ R_ARM_GOT_BREL: BSS
    .word far(GOT)                  @ R_ARM_GOT_BREL: a Thumb function
    .word mp_type_type(GOT_PREL)    @ R_ARM_GOT_PREL: an mp_fun_table entry
    .word table(GOTOFF)             @ R_ARM_GOTOFF32
    .word table + 8 - .             @ R_ARM_REL32
    .word far(TARGET1)              @ R_ARM_TARGET1
    .word table + 4                 @ R_ARM_ABS32 in a literal pool

    .section .text.far, "ax", %progbits
    .space 5000
    .type far, %function
    .thumb_func
far:
    bl mpy_init                     @ R_ARM_THM_CALL, backward
    bx lr

    .section .rodata
    .align 2
table:
    .word 1, 2, 3
    .word far                       @ R_ARM_ABS32: a Thumb function (bit 0 set)
    .word table + 4                 @ R_ARM_ABS32: rodata
    .word counter + 4               @ R_ARM_ABS32: BSS
    .word mp_fun_table + 8          @ R_ARM_ABS32: into mp_fun_table
    .word mp_type_fun_builtin_2     @ R_ARM_ABS32: an mp_fun_table entry

    .bss
    .global counter
counter:
    .space 8
