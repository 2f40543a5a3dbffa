/* bind_driver.c - the MicroPython binding (natmod/kernels/binding.c, included
 * below) run bare metal on the emulator, to measure what its argument checks
 * cost per call (benchmarks/kbench/glue.py).
 *
 * binding.c is compiled exactly as natmod/build.py compiles it (dynruntime
 * mode); the MicroPython runtime it calls through mp_fun_table is replaced by
 * minimal stand-ins: small ints are decoded in place, a buffer object is a
 * fake_obj_t holding its mp_buffer_info_t. What the real runtime spends in
 * mp_obj_get_int / mp_get_buffer is MicroPython's own work, measured with the
 * rest of the interpreter (glue.py, callgrind); the stand-ins cost a few
 * cycles per argument, which kb_bind_overhead() measures to subtract.
 *
 * kb_bind(fn, spec, b0..b7): spec[0] = number of arguments, then per argument
 * one word: kind << 24 | value, kind 0 = small int (value: 24-bit signed),
 * 1 = None, 2 = buffer (value: index of b0..b7 << 16 | typecode << 8), with the
 * buffer's byte length in a second word. fn indexes FUNS below. Returns the
 * binding's return value (a small int decoded, else 0).
 */
#include "../../natmod/kernels/binding.c"

typedef struct {
    const void *type;           /* not looked at: the stand-ins know it is a buffer */
    mp_buffer_info_t info;
} fake_obj_t;

static const int none_obj = 0;

/* What the loader provides a native module: its qstr numbers (only used by
 * error paths here) and the function type its DEFs point at. */
const uint16_t mp_native_qstr_table[512];
const mp_obj_type_t mp_type_fun_builtin_var;

static mp_uint_t kb_native_from_obj(mp_obj_t o, mp_uint_t type) {
    (void)type;
    return (mp_uint_t)MP_OBJ_SMALL_INT_VALUE(o);
}

static mp_obj_t kb_native_to_obj(mp_uint_t v, mp_uint_t type) {
    (void)type;
    return MP_OBJ_NEW_SMALL_INT(v);
}

static bool kb_get_buffer(mp_obj_t o, mp_buffer_info_t *bi, mp_uint_t flags) {
    (void)flags;
    *bi = ((const fake_obj_t *)MP_OBJ_TO_PTR(o))->info;
    return true;
}

const mp_fun_table_t mp_fun_table = {
    .const_none = &none_obj,
    .native_from_obj = kb_native_from_obj,
    .native_to_obj = kb_native_to_obj,
    .get_buffer = kb_get_buffer,
};

typedef mp_obj_t (*bind_fn_t)(size_t, const mp_obj_t *);

static mp_obj_t kb_nothing(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    (void)args;
    return MP_OBJ_NEW_SMALL_INT(0);
}

/* The same order as BINDINGS in glue.py. */
static const bind_fn_t FUNS[] = {
    kb_nothing, b_bitlen_s32, b_requant_s32_s8, b_bias_add_s32, b_acc_add_s32,
    b_fc_s8_s32, b_fc_t_s8_s32, b_outer_s8_s32,
    b_conv2d_s8_s32_chw, b_conv2d_t_s8_s32_chw, b_conv2d_grad_s8_s32_chw,
    b_relu_s8, b_relu_bwd_s8, b_maxpool2d_s8_chw, b_maxpool2d_bwd_s8_chw,
    b_argmax_s8, b_softmax_xent_s8, b_update_s8, b_update_outer_s8,
    b_mask_s8, b_fc_mask_s8_s32, b_fc_t_mask_s8_s32,
    b_conv2d_mask_s8_s32_chw, b_conv2d_t_mask_s8_s32_chw,
    b_fc_score_s8, b_conv2d_score_s8_chw, b_score_update_s8,
    b_conv2d_s8_s8_chw, b_conv2d_mask_s8_s8_chw,
};

#define MAX_ARGS 20
#define MAX_BUFS 8

/* Build the argument objects, call binding FUNS[fn]. */
int32_t kb_bind(int32_t fn, const int32_t *spec, void *b0, void *b1, void *b2, void *b3, void *b4, void *b5,
                void *b6, void *b7) {
    void *bufs[MAX_BUFS];
    fake_obj_t objs[MAX_BUFS];
    mp_obj_t args[MAX_ARGS];
    int32_t n = spec[0], i, w = 1, nb = 0;
    mp_obj_t r;
    bufs[0] = b0;
    bufs[1] = b1;
    bufs[2] = b2;
    bufs[3] = b3;
    bufs[4] = b4;
    bufs[5] = b5;
    bufs[6] = b6;
    bufs[7] = b7;
    for (i = 0; i < n; i++) {
        int32_t word = spec[w++], kind = (int32_t)((uint32_t)word >> 24);
        if (kind == 0) {
            args[i] = MP_OBJ_NEW_SMALL_INT(((int32_t)((uint32_t)word << 8)) >> 8);
        } else if (kind == 1) {
            args[i] = (mp_obj_t)&none_obj;
        } else {
            fake_obj_t *o = &objs[nb++];
            o->type = NULL;
            o->info.buf = bufs[(word >> 16) & 0xFF];
            o->info.typecode = (word >> 8) & 0xFF;
            o->info.len = (size_t)spec[w++];
            args[i] = MP_OBJ_FROM_PTR(o);
        }
    }
    r = FUNS[fn]((size_t)n, args);
    return mp_obj_is_small_int(r) ? (int32_t)MP_OBJ_SMALL_INT_VALUE(r) : 0;
}
