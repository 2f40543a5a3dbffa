# Every x86-64 relocation kind natmod/mpy_ld handles, for test_natmod_relocs.py: linked by
# mpy_ld and by GNU ld, the two images must agree. Never executed.
    .text
    .globl mpy_init
mpy_init:
    call far                                # R_X86_64_PC32 (a local function)
    call far_global@PLT                     # R_X86_64_PLT32
    leaq table(%rip), %rax                  # R_X86_64_PC32: rodata
    movq mp_fun_table@GOTPCREL(%rip), %rax  # R_X86_64_REX_GOTPCRELX
    call *mp_type_type@GOTPCREL(%rip)       # R_X86_64_GOTPCRELX: an mp_fun_table entry
    movq 0(%rip), %rax                      # R_X86_64_GOTPCREL (what older assemblers emit)
    .reloc . - 4, R_X86_64_GOTPCREL, counter - 4
    ret

    .section .text.far, "ax", @progbits
    .space 5000
far:
    .globl far_global
far_global:
    jmp mpy_init                            # R_X86_64_PLT32, backward

    .section .rodata
    .align 8
table:
    .quad 1, 2
    .quad far                               # R_X86_64_64: text
    .quad table + 8                         # R_X86_64_64: rodata
    .quad counter + 8                       # R_X86_64_64: BSS
    .quad mp_fun_table + 16                 # R_X86_64_64: into mp_fun_table
    .quad mp_type_fun_builtin_2             # R_X86_64_64: an mp_fun_table entry

    .bss
    .globl counter
counter:
    .zero 16
    .section .note.GNU-stack, "", @progbits
