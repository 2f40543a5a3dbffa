// selftest: a native module that exercises what the natmod toolchain must get right
// (tests/natmod/ runs it in the unix port and on an emulated Cortex-M0+, and checks every
// build against GNU ld).

#include "py/dynruntime.h"

// In bulk.c, more than 2 KB of code away.
uint32_t selftest_mix(uint32_t x);
uint32_t selftest_crc32(const uint8_t *buf, size_t len);
int32_t selftest_div(int32_t a, int32_t b);
int32_t selftest_mod(int32_t a, int32_t b);
extern const int16_t selftest_primes[16];

// BSS: zero-initialised non-static globals, reached through GOT slots the loader relocates.
mp_int_t selftest_counter;
int32_t selftest_cells[8];

// Tables of pointers in read-only data: each entry becomes a loader relocation, into text
// (Thumb function pointers keep bit 0 set), into read-only data, and into BSS.
static int32_t op_add(int32_t a, int32_t b) {
    return a + b;
}
static int32_t op_sub(int32_t a, int32_t b) {
    return a - b;
}
static int32_t op_mul(int32_t a, int32_t b) {
    return a * b;
}
static int32_t op_mix(int32_t a, int32_t b) {
    return selftest_mix(a ^ b);  // a tail call into bulk.c (b.w: R_ARM_THM_JUMP24 on armv7m)
}
static int32_t (*const ops[])(int32_t, int32_t) = {op_add, op_sub, op_mul, selftest_div, selftest_mod, op_mix};
static const char *const op_names[] = {"add", "sub", "mul", "div", "mod", "mix"};
static int32_t *const cells[] = {&selftest_cells[0], &selftest_cells[7]};

#define N_OPS (sizeof(ops) / sizeof(ops[0]))

static mp_int_t index_arg(mp_obj_t i_in, mp_int_t n) {
    mp_int_t i = mp_obj_get_int(i_in);
    if (i < 0 || i >= n) {
        mp_raise_ValueError(MP_ERROR_TEXT("selftest: index out of range"));
    }
    return i;
}

// An int.
static mp_obj_t answer(void) {
    return mp_obj_new_int(42);
}
static MP_DEFINE_CONST_FUN_OBJ_0(answer_obj, answer);

// qstrs from the module's qstr table: a name returned as a str, and an attribute looked up.
static mp_obj_t name(void) {
    return MP_OBJ_NEW_QSTR(MP_QSTR_picotrain_selftest);
}
static MP_DEFINE_CONST_FUN_OBJ_0(name_obj, name);

static mp_obj_t weight_of(mp_obj_t obj) {
    return mp_load_attr(obj, MP_QSTR_weight);
}
static MP_DEFINE_CONST_FUN_OBJ_1(weight_of_obj, weight_of);

// A BSS global set by mpy_init and read later.
static mp_obj_t counter(void) {
    return mp_obj_new_int(selftest_counter);
}
static MP_DEFINE_CONST_FUN_OBJ_0(counter_obj, counter);

static mp_obj_t bump(mp_obj_t n) {
    selftest_counter += mp_obj_get_int(n);
    return mp_obj_new_int(selftest_counter);
}
static MP_DEFINE_CONST_FUN_OBJ_1(bump_obj, bump);

// A const table in another file.
static mp_obj_t prime(mp_obj_t i) {
    return mp_obj_new_int(selftest_primes[index_arg(i, 16)]);
}
static MP_DEFINE_CONST_FUN_OBJ_1(prime_obj, prime);

// ValueError with a message, raised through mp_fun_table. (In a dynamic module
// mp_obj_get_int returns mp_uint_t: compare it as a signed value.)
static mp_obj_t check(mp_obj_t x) {
    if ((mp_int_t)mp_obj_get_int(x) < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("selftest: negative"));
    }
    return x;
}
static MP_DEFINE_CONST_FUN_OBJ_1(check_obj, check);

// A buffer argument: the sum of an array('b').
static mp_obj_t sum_b(mp_obj_t buf_in) {
    mp_buffer_info_t buf;
    mp_get_buffer_raise(buf_in, &buf, MP_BUFFER_READ);
    const int8_t *p = buf.buf;
    mp_int_t sum = 0;
    for (size_t i = 0; i < buf.len; i++) {
        sum += p[i];
    }
    return mp_obj_new_int(sum);
}
static MP_DEFINE_CONST_FUN_OBJ_1(sum_b_obj, sum_b);

// C division (truncating) and remainder by a variable, far away in bulk.c.
static mp_obj_t cdivmod(mp_obj_t a_in, mp_obj_t b_in) {
    int32_t a = mp_obj_get_int(a_in), b = mp_obj_get_int(b_in);
    if (b == 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("selftest: division by zero"));
    }
    mp_obj_t qr[2] = {mp_obj_new_int(selftest_div(a, b)), mp_obj_new_int(selftest_mod(a, b))};
    return mp_obj_new_tuple(2, qr);
}
static MP_DEFINE_CONST_FUN_OBJ_2(cdivmod_obj, cdivmod);

// Calls through the function pointer table, and the names from the string pointer table.
static mp_obj_t apply(mp_obj_t i, mp_obj_t a, mp_obj_t b) {
    int32_t (*op)(int32_t, int32_t) = ops[index_arg(i, N_OPS)];
    return mp_obj_new_int(op(mp_obj_get_int(a), mp_obj_get_int(b)));
}
static MP_DEFINE_CONST_FUN_OBJ_3(apply_obj, apply);

static mp_obj_t op_name(mp_obj_t i) {
    const char *s = op_names[index_arg(i, N_OPS)];
    size_t n = 0;
    while (s[n]) {
        n++;
    }
    return mp_obj_new_str(s, n);
}
static MP_DEFINE_CONST_FUN_OBJ_1(op_name_obj, op_name);

// Store through the table of BSS pointers, read back through the global.
static mp_obj_t cell(mp_obj_t i, mp_obj_t v) {
    *cells[index_arg(i, 2)] = mp_obj_get_int(v);
    return mp_obj_new_int(selftest_cells[0] * 1000 + selftest_cells[7]);
}
static MP_DEFINE_CONST_FUN_OBJ_2(cell_obj, cell);

// Code and rodata in bulk.c.
static mp_obj_t mix(mp_obj_t x) {
    return mp_obj_new_int_from_uint(selftest_mix(mp_obj_get_int_truncated(x)));
}
static MP_DEFINE_CONST_FUN_OBJ_1(mix_obj, mix);

static mp_obj_t crc32(mp_obj_t buf_in) {
    mp_buffer_info_t buf;
    mp_get_buffer_raise(buf_in, &buf, MP_BUFFER_READ);
    return mp_obj_new_int_from_uint(selftest_crc32(buf.buf, buf.len));
}
static MP_DEFINE_CONST_FUN_OBJ_1(crc32_obj, crc32);

// The entry point, last in the module: the entry jump has to reach across everything above.
mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY

    selftest_counter = 12345;
    mp_store_global(MP_QSTR_answer, MP_OBJ_FROM_PTR(&answer_obj));
    mp_store_global(MP_QSTR_name, MP_OBJ_FROM_PTR(&name_obj));
    mp_store_global(MP_QSTR_weight_of, MP_OBJ_FROM_PTR(&weight_of_obj));
    mp_store_global(MP_QSTR_counter, MP_OBJ_FROM_PTR(&counter_obj));
    mp_store_global(MP_QSTR_bump, MP_OBJ_FROM_PTR(&bump_obj));
    mp_store_global(MP_QSTR_prime, MP_OBJ_FROM_PTR(&prime_obj));
    mp_store_global(MP_QSTR_check, MP_OBJ_FROM_PTR(&check_obj));
    mp_store_global(MP_QSTR_sum_b, MP_OBJ_FROM_PTR(&sum_b_obj));
    mp_store_global(MP_QSTR_cdivmod, MP_OBJ_FROM_PTR(&cdivmod_obj));
    mp_store_global(MP_QSTR_apply, MP_OBJ_FROM_PTR(&apply_obj));
    mp_store_global(MP_QSTR_op_name, MP_OBJ_FROM_PTR(&op_name_obj));
    mp_store_global(MP_QSTR_cell, MP_OBJ_FROM_PTR(&cell_obj));
    mp_store_global(MP_QSTR_mix, MP_OBJ_FROM_PTR(&mix_obj));
    mp_store_global(MP_QSTR_crc32, MP_OBJ_FROM_PTR(&crc32_obj));

    MP_DYNRUNTIME_INIT_EXIT
}
