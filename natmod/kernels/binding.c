/* binding.c - picotrain._native: the C kernels as a MicroPython native module.
 *
 * Every function of device/picotrain/kernels.py NAMES, with the Python
 * signature of kernels_py.py. Before any kernel runs, every argument is
 * checked: buffers by type (the typecode of the buffer protocol: 'b' int8,
 * 'h' int16, 'i' int32, bytearray / 'B' uint8) and by length against the
 * sizes the int arguments imply, ints by range. A bad argument raises
 * TypeError or ValueError naming the function, the argument and what was
 * expected; no kernel ever reads or writes outside the buffers it was given.
 * Valid calls allocate nothing (they run under micropython.heap_lock()).
 *
 * Shifts (shift, d, sa, sg, exp) accept any int: every value has the
 * meaning of kernels_py.py (clamping to [-64, 64] changes no result);
 * rescale_s32_s8 is the exception, its mul and shift are checked against
 * their documented ranges ([0, 65535], [0, 62]) as in kernels_py.py.
 * thr accepts any int (clamped to [-32768, 32768], which changes no mask).
 * The big kernels take an optional channel range c0, c1 last (c1 None: all).
 */
#include "py/dynruntime.h"
#include "picotrain_kernels.h"

/* buffer kinds: the typecode they need ('s': int8 or int16 scores) */
enum { K_S8 = 'b', K_S16 = 'h', K_S32 = 'i', K_U8 = 'B', K_SCORES = 's' };

#define READ 0
#define WRITE 1
#define SIZE_MAX_ARG 0x7FFFFFFF
#define GEOM_MAX 32767          /* h, w, k, stride, pad */
#define CHAN_MAX 0xFFFFFF       /* c_in, c_out, c */

/* ------------------------------------------------------------ messages -- */

static size_t c_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) {
        n++;
    }
    return n;
}

static mp_obj_t c_str(const char *s) {
    return mp_obj_new_str(s, c_strlen(s));
}

/* raise type(fmt % items): the runtime's own formatting, on the error path only */
static MP_NORETURN void raise_fmt(const mp_obj_type_t *type, const char *fmt, size_t n, mp_obj_t *items) {
    mp_obj_t msg = mp_binary_op(MP_BINARY_OP_MODULO, c_str(fmt), mp_obj_new_tuple(n, items));
    mp_raise_dyn(mp_obj_new_exception_arg1(type, msg));
}

#define Q(name) MP_OBJ_NEW_QSTR(name)
#define INT(v) mp_obj_new_int(v)

/* ---------------------------------------------------------------- ints -- */

static mp_int_t get_int(qstr fn, qstr arg, mp_obj_t o) {
    if (!mp_obj_is_small_int(o) && mp_obj_get_type(o) != &mp_type_int) {
        mp_obj_t it[3] = {Q(fn), Q(arg), Q(mp_obj_get_type(o)->name)};
        raise_fmt(&mp_type_TypeError, "%s: %s must be an int, got %s", 3, it);
    }
    return mp_obj_get_int(o);
}

static mp_int_t get_ranged(qstr fn, qstr arg, mp_obj_t o, mp_int_t lo, mp_int_t hi) {
    mp_int_t v = get_int(fn, arg, o);
    if (v < lo || v > hi) {
        mp_obj_t it[5] = {Q(fn), Q(arg), INT(lo), INT(hi), o};
        raise_fmt(&mp_type_ValueError, "%s: %s must be in [%d, %d], got %d", 5, it);
    }
    return v;
}

static int32_t get_size(qstr fn, qstr arg, mp_obj_t o) {
    return (int32_t)get_ranged(fn, arg, o, 0, SIZE_MAX_ARG);
}

static int32_t get_clamped(qstr fn, qstr arg, mp_obj_t o, mp_int_t lo, mp_int_t hi) {
    mp_int_t v = get_int(fn, arg, o);
    return (int32_t)(v < lo ? lo : (v > hi ? hi : v));
}

#define get_shift(fn, arg, o) get_clamped(fn, arg, o, -64, 64)

/* a * b for sizes in [0, 2^31 - 1]; ValueError when it exceeds 2^31 - 1 */
static int32_t mul_size(qstr fn, const char *what, int32_t a, int32_t b) {
    int32_t bits;
    uint32_t p;
    if (a == 0 || b == 0) {
        return 0;
    }
    if ((((uint32_t)a | (uint32_t)b) >> 15) == 0) {
        return a * b;   /* both < 2^15: the product fits (issue 8: the common case, fast) */
    }
    bits = pt_bitlen_u32((uint32_t)a) + pt_bitlen_u32((uint32_t)b);
    p = (uint32_t)a * (uint32_t)b;   /* exact when bits <= 32 */
    if (bits > 32 || p > (uint32_t)SIZE_MAX_ARG) {
        mp_obj_t it[2] = {Q(fn), c_str(what)};
        raise_fmt(&mp_type_ValueError, "%s: %s is too large", 2, it);
    }
    return (int32_t)p;
}

/* int32 sums of int8 products are exact up to PT_MAX_FANIN terms */
static void check_fanin(qstr fn, const char *what, int32_t terms) {
    if (terms > PT_MAX_FANIN) {
        mp_obj_t it[4] = {Q(fn), INT(terms), c_str(what), INT(PT_MAX_FANIN)};
        raise_fmt(&mp_type_ValueError, "%s: %d terms per int32 sum (%s), at most %d", 4, it);
    }
}

/* The optional channel range a[i], a[i + 1] (c0, c1) of a call with n_args
 * arguments over `count` channels: 0 <= c0 <= c1 <= count; absent, or c1 None,
 * means up to count. */
static void get_range(qstr fn, size_t n_args, const mp_obj_t *a, size_t i, int32_t count,
                      int32_t *c0, int32_t *c1) {
    *c0 = n_args > i ? (int32_t)get_ranged(fn, MP_QSTR_c0, a[i], 0, count) : 0;
    *c1 = count;
    if (n_args > i + 1 && a[i + 1] != mp_const_none) {
        *c1 = (int32_t)get_ranged(fn, MP_QSTR_c1, a[i + 1], *c0, count);
    }
}

/* ------------------------------------------------------------- buffers -- */

static const char *kind_text(int kind) {
    if (kind == K_S8) {
        return "array('b') (int8)";
    } else if (kind == K_S16) {
        return "array('h') (int16)";
    } else if (kind == K_S32) {
        return "array('i') (int32)";
    } else if (kind == K_U8) {
        return "bytearray (uint8)";
    }
    return "array('b') or array('h') (int8 or int16 scores)";
}

static int kind_accepts(int kind, int tc) {
    if (tc == kind) {
        return 1;
    }
    if (kind == K_U8) {
        return tc == BYTEARRAY_TYPECODE;
    }
    return kind == K_SCORES && (tc == 'b' || tc == 'h');
}

/* The buffer of argument `arg`, checked for type and for at least `need`
 * items ("need_text" says where that number comes from). *tc_out (if not
 * NULL) gets the typecode. */
static void *get_buf(qstr fn, qstr arg, mp_obj_t o, int kind, int write, int32_t need,
                     const char *need_text, int *tc_out) {
    mp_buffer_info_t bi;
    size_t items;
    if (!mp_get_buffer(o, &bi, write ? MP_BUFFER_RW : MP_BUFFER_READ) || !kind_accepts(kind, bi.typecode)) {
        mp_obj_t got;
        if (mp_get_buffer(o, &bi, MP_BUFFER_READ)) {
            if (!kind_accepts(kind, bi.typecode)) {
                /* array('h'), memoryview('h'), bytes, bytearray, ... */
                qstr name = mp_obj_get_type(o)->name;
                char t[5];   /* no initialiser: gcc would call memcpy */
                t[0] = '(';
                t[1] = '\'';
                t[2] = (char)bi.typecode;
                t[3] = '\'';
                t[4] = ')';
                got = Q(name);
                if (name == MP_QSTR_array || name == MP_QSTR_memoryview) {
                    got = mp_binary_op(MP_BINARY_OP_ADD, got, mp_obj_new_str(t, 5));
                }
            } else {
                got = c_str("a read-only buffer");
            }
        } else {
            got = Q(mp_obj_get_type(o)->name);
        }
        mp_obj_t it[5] = {Q(fn), Q(arg), c_str(write ? "a writable " : ""), c_str(kind_text(kind)), got};
        raise_fmt(&mp_type_TypeError, "%s: %s must be %s%s, got %s", 5, it);
    }
    items = bi.len;
    if (bi.typecode == 'h' || bi.typecode == 'i') {
        uintptr_t align = bi.typecode == 'h' ? 1 : 3;
        items >>= bi.typecode == 'h' ? 1 : 2;
        if ((uintptr_t)bi.buf & align) {   /* an M0+ faults on unaligned halfword/word access */
            mp_obj_t it[2] = {Q(fn), Q(arg)};
            raise_fmt(&mp_type_ValueError, "%s: %s is not aligned to its item size", 2, it);
        }
    }
    if (items < (size_t)need) {
        mp_obj_t it[5] = {Q(fn), Q(arg), INT(items), INT(need), c_str(need_text)};
        raise_fmt(&mp_type_ValueError, "%s: %s has %d items, needs %d (%s)", 5, it);
    }
    if (tc_out != NULL) {
        *tc_out = bi.typecode;
    }
    return bi.buf;
}

#define BUF(fn, arg, o, kind, write, need, text) get_buf(fn, arg, o, kind, write, need, text, NULL)

/* scores (None allowed when may_be_none) + subset for n edges, into *sc. */
static void get_scores(qstr fn, mp_obj_t scores, mp_obj_t subset, int32_t n, int may_be_none,
                       int write, pt_scores_t *sc) {
    int32_t m = n;
    int tc;
    sc->data = NULL;
    sc->subset = NULL;
    sc->s16 = 0;
    sc->edge0 = 0;
    if (scores == mp_const_none) {
        if (!may_be_none) {
            mp_obj_t it[3] = {Q(fn), Q(MP_QSTR_scores), c_str(kind_text(K_SCORES))};
            raise_fmt(&mp_type_TypeError, "%s: %s must be %s, got None", 3, it);
        }
        return;   /* no mask: subset is not looked at (as kernels_py) */
    }
    if (subset != mp_const_none) {
        sc->subset = BUF(fn, MP_QSTR_subset, subset, K_U8, READ, (int32_t)(((uint32_t)n + 7u) >> 3),
                         "one bit per edge");
        m = (int32_t)pt_popcount_range(sc->subset, 0, (uint32_t)n);
    }
    sc->data = get_buf(fn, MP_QSTR_scores, scores, K_SCORES, write, m,
                       sc->subset ? "one per set bit of subset" : "one per edge", &tc);
    sc->s16 = tc == 'h';
}

static int32_t get_smax(qstr fn, mp_obj_t o, const pt_scores_t *sc) {
    return (int32_t)get_ranged(fn, MP_QSTR_smax, o, 0, sc->s16 ? 32767 : 127);
}

#define get_thr(fn, o) get_clamped(fn, MP_QSTR_thr, o, -32768, 32768)

/* ------------------------------------------------------ conv geometry -- */

enum { FANIN_FWD, FANIN_T, FANIN_GRAD };

/* c_in, h, wd, c_out, k, stride, pad from a[0:7] into *d, with the item
 * counts of the input image, the weights and the output. */
static void get_conv(qstr fn, const mp_obj_t *a, int fanin, pt_conv2d_dims_t *d,
                     int32_t *n_x, int32_t *n_w, int32_t *n_o) {
    int32_t c_in = (int32_t)get_ranged(fn, MP_QSTR_c_in, a[0], 0, CHAN_MAX);
    int32_t h = (int32_t)get_ranged(fn, MP_QSTR_h, a[1], 0, GEOM_MAX);
    int32_t wd = (int32_t)get_ranged(fn, MP_QSTR_wd, a[2], 0, GEOM_MAX);
    int32_t c_out = (int32_t)get_ranged(fn, MP_QSTR_c_out, a[3], 0, CHAN_MAX);
    int32_t k = (int32_t)get_ranged(fn, MP_QSTR_k, a[4], 1, GEOM_MAX);
    int32_t stride = (int32_t)get_ranged(fn, MP_QSTR_stride, a[5], 1, GEOM_MAX);
    int32_t pad = (int32_t)get_ranged(fn, MP_QSTR_pad, a[6], 0, GEOM_MAX);
    int32_t kk;
    if (pt_conv2d_dims(d, c_in, h, wd, c_out, k, stride, pad) != 0) {
        mp_obj_t it[6] = {Q(fn), INT(k), INT(k), INT(h), INT(wd), INT(pad)};
        raise_fmt(&mp_type_ValueError, "%s: a %dx%d kernel does not fit a %dx%d input with pad %d", 6, it);
    }
    kk = mul_size(fn, "k*k", k, k);
    *n_x = mul_size(fn, "c_in*h*wd", mul_size(fn, "c_in*h*wd", c_in, h), wd);
    *n_w = mul_size(fn, "c_out*c_in*k*k", mul_size(fn, "c_out*c_in*k*k", c_out, c_in), kk);
    *n_o = mul_size(fn, "c_out*oh*ow", mul_size(fn, "c_out*oh*ow", c_out, d->oh), d->ow);
    if (fanin == FANIN_FWD) {
        check_fanin(fn, "c_in*k*k", mul_size(fn, "c_in*k*k", c_in, kk));
    } else if (fanin == FANIN_T) {
        check_fanin(fn, "c_out*k*k", mul_size(fn, "c_out*k*k", c_out, kk));
    } else {
        check_fanin(fn, "oh*ow", mul_size(fn, "oh*ow", d->oh, d->ow));
    }
}

/* --------------------------------------------------------------- kernels -- */

static mp_obj_t b_bitlen_s32(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_bitlen_s32;
    int32_t n = get_size(fn, MP_QSTR_n, a[1]);
    const int32_t *acc = BUF(fn, MP_QSTR_acc, a[0], K_S32, READ, n, "n");
    return INT(pt_bitlen_s32(acc, n));
}

static mp_obj_t b_requant_s32_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_requant_s32_s8;
    int32_t n = get_size(fn, MP_QSTR_n, a[2]);
    int32_t shift = get_shift(fn, MP_QSTR_shift, a[3]);
    const int32_t *acc = BUF(fn, MP_QSTR_acc, a[0], K_S32, READ, n, "n");
    int8_t *out = BUF(fn, MP_QSTR_out, a[1], K_S8, WRITE, n, "n");
    return INT(pt_requant_s32_s8(acc, out, n, shift));
}

static mp_obj_t b_bias_add_s32(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_bias_add_s32;
    int32_t c = get_size(fn, MP_QSTR_c, a[2]);
    int32_t plane = get_size(fn, MP_QSTR_plane, a[3]);
    int32_t d = get_shift(fn, MP_QSTR_d, a[4]);
    int32_t n = mul_size(fn, "c*plane", c, plane);
    int32_t *acc = BUF(fn, MP_QSTR_acc, a[0], K_S32, WRITE, n, "c*plane");
    const int32_t *bias = BUF(fn, MP_QSTR_bias, a[1], K_S32, READ, c, "c");
    pt_bias_add_s32(acc, bias, c, plane, d);
    return mp_const_none;
}

static mp_obj_t b_acc_add_s32(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_acc_add_s32;
    int32_t n = get_size(fn, MP_QSTR_n, a[2]);
    int32_t sa = get_shift(fn, MP_QSTR_sa, a[3]);
    int32_t sg = get_shift(fn, MP_QSTR_sg, a[4]);
    int32_t *acc = BUF(fn, MP_QSTR_acc, a[0], K_S32, WRITE, n, "n");
    const int32_t *g = BUF(fn, MP_QSTR_g, a[1], K_S32, READ, n, "n");
    pt_acc_add_s32(acc, g, n, sa, sg);
    return mp_const_none;
}

static mp_obj_t b_fc_s8_s32(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_fc_s8_s32;
    int32_t n_in = get_size(fn, MP_QSTR_n_in, a[3]);
    int32_t n_out = get_size(fn, MP_QSTR_n_out, a[4]);
    int32_t nw = mul_size(fn, "n_in*n_out", n_in, n_out);
    check_fanin(fn, "n_in", n_in);
    const int8_t *x = BUF(fn, MP_QSTR_x, a[0], K_S8, READ, n_in, "n_in");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[1], K_S8, READ, nw, "n_in*n_out");
    int32_t *out = BUF(fn, MP_QSTR_out, a[2], K_S32, WRITE, n_out, "n_out");
    int32_t c0, c1;
    get_range(fn, n_args, a, 5, n_out, &c0, &c1);
    pt_fc_s8_s32(x, w, out, n_in, n_out, c0, c1);
    return mp_const_none;
}

static mp_obj_t b_fc_t_s8_s32(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_fc_t_s8_s32;
    int32_t n_in = get_size(fn, MP_QSTR_n_in, a[3]);
    int32_t n_out = get_size(fn, MP_QSTR_n_out, a[4]);
    int32_t nw = mul_size(fn, "n_in*n_out", n_in, n_out);
    check_fanin(fn, "n_out", n_out);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, n_out, "n_out");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[1], K_S8, READ, nw, "n_in*n_out");
    int32_t *out = BUF(fn, MP_QSTR_out, a[2], K_S32, WRITE, n_in, "n_in");
    pt_fc_t_s8_s32(e, w, out, n_in, n_out);
    return mp_const_none;
}

static mp_obj_t b_outer_s8_s32(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_outer_s8_s32;
    int32_t n_out = get_size(fn, MP_QSTR_n_out, a[3]);
    int32_t n_in = get_size(fn, MP_QSTR_n_in, a[4]);
    int32_t nw = mul_size(fn, "n_out*n_in", n_out, n_in);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, n_out, "n_out");
    const int8_t *x = BUF(fn, MP_QSTR_x, a[1], K_S8, READ, n_in, "n_in");
    int32_t *out = BUF(fn, MP_QSTR_out, a[2], K_S32, WRITE, nw, "n_out*n_in");
    int32_t c0, c1;
    get_range(fn, n_args, a, 5, n_out, &c0, &c1);
    pt_outer_s8_s32(e, x, out, n_out, n_in, c0, c1);
    return mp_const_none;
}

static mp_obj_t b_conv2d_s8_s32_chw(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_conv2d_s8_s32_chw;
    pt_conv2d_dims_t d;
    int32_t nx, nw, no;
    get_conv(fn, a + 3, FANIN_FWD, &d, &nx, &nw, &no);
    const int8_t *x = BUF(fn, MP_QSTR_x, a[0], K_S8, READ, nx, "c_in*h*wd");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[1], K_S8, READ, nw, "c_out*c_in*k*k");
    int32_t *out = BUF(fn, MP_QSTR_out, a[2], K_S32, WRITE, no, "c_out*oh*ow");
    int32_t c0, c1;
    get_range(fn, n_args, a, 10, d.c_out, &c0, &c1);
    pt_conv2d_s8_s32_chw(x, w, out, &d, c0, c1);
    return mp_const_none;
}

static mp_obj_t b_conv2d_t_s8_s32_chw(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_conv2d_t_s8_s32_chw;
    pt_conv2d_dims_t d;
    int32_t nx, nw, no;
    get_conv(fn, a + 3, FANIN_T, &d, &nx, &nw, &no);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, no, "c_out*oh*ow");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[1], K_S8, READ, nw, "c_out*c_in*k*k");
    int32_t *out = BUF(fn, MP_QSTR_out, a[2], K_S32, WRITE, nx, "c_in*h*wd");
    int32_t c0, c1;
    get_range(fn, n_args, a, 10, d.c_in, &c0, &c1);
    pt_conv2d_t_s8_s32_chw(e, w, out, &d, c0, c1);
    return mp_const_none;
}

static mp_obj_t b_conv2d_grad_s8_s32_chw(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_conv2d_grad_s8_s32_chw;
    pt_conv2d_dims_t d;
    int32_t nx, nw, no;
    get_conv(fn, a + 3, FANIN_GRAD, &d, &nx, &nw, &no);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, no, "c_out*oh*ow");
    const int8_t *x = BUF(fn, MP_QSTR_x, a[1], K_S8, READ, nx, "c_in*h*wd");
    int32_t *out = BUF(fn, MP_QSTR_out, a[2], K_S32, WRITE, nw, "c_out*c_in*k*k");
    int32_t c0, c1;
    get_range(fn, n_args, a, 10, d.c_out, &c0, &c1);
    pt_conv2d_grad_s8_s32_chw(e, x, out, &d, c0, c1);
    return mp_const_none;
}

static mp_obj_t b_relu_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_relu_s8;
    int32_t n = get_size(fn, MP_QSTR_n, a[1]);
    int8_t *x = BUF(fn, MP_QSTR_x, a[0], K_S8, WRITE, n, "n");
    pt_relu_s8(x, n);
    return mp_const_none;
}

static mp_obj_t b_relu_bwd_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_relu_bwd_s8;
    int32_t n = get_size(fn, MP_QSTR_n, a[2]);
    const int8_t *y = BUF(fn, MP_QSTR_y, a[0], K_S8, READ, n, "n");
    int8_t *e = BUF(fn, MP_QSTR_e, a[1], K_S8, WRITE, n, "n");
    pt_relu_bwd_s8(y, e, n);
    return mp_const_none;
}

/* c, h, wd, k of a pooling layer from a[0:4]; returns the pooled item count */
static int32_t get_pool(qstr fn, const mp_obj_t *a, int32_t *c, int32_t *h, int32_t *wd, int32_t *k,
                        int32_t *n_x) {
    int32_t oh, ow;
    *c = (int32_t)get_ranged(fn, MP_QSTR_c, a[0], 0, CHAN_MAX);
    *h = (int32_t)get_ranged(fn, MP_QSTR_h, a[1], 0, GEOM_MAX);
    *wd = (int32_t)get_ranged(fn, MP_QSTR_wd, a[2], 0, GEOM_MAX);
    *k = (int32_t)get_ranged(fn, MP_QSTR_k, a[3], 1, GEOM_MAX);
    oh = (int32_t)pt_udiv_u32((uint32_t)*h, (uint32_t)*k);
    ow = (int32_t)pt_udiv_u32((uint32_t)*wd, (uint32_t)*k);
    *n_x = mul_size(fn, "c*h*wd", mul_size(fn, "c*h*wd", *c, *h), *wd);
    return mul_size(fn, "c*(h//k)*(wd//k)", mul_size(fn, "c*(h//k)*(wd//k)", *c, oh), ow);
}

static mp_obj_t b_maxpool2d_s8_chw(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_maxpool2d_s8_chw;
    int32_t c, h, wd, k, nx, no;
    uint8_t *idx = NULL;
    no = get_pool(fn, a + 3, &c, &h, &wd, &k, &nx);
    const int8_t *x = BUF(fn, MP_QSTR_x, a[0], K_S8, READ, nx, "c*h*wd");
    int8_t *out = BUF(fn, MP_QSTR_out, a[1], K_S8, WRITE, no, "c*(h//k)*(wd//k)");
    if (a[2] != mp_const_none) {
        if (k > 16) {
            mp_obj_t it[2] = {Q(fn), INT(k)};
            raise_fmt(&mp_type_ValueError, "%s: idx holds window offsets < 256, so k <= 16 (got k=%d)", 2, it);
        }
        idx = BUF(fn, MP_QSTR_idx, a[2], K_U8, WRITE, no, "c*(h//k)*(wd//k)");
    }
    int32_t relu = n_args > 7 ? (int32_t)get_ranged(fn, MP_QSTR_relu, a[7], 0, 1) : 0;
    pt_maxpool2d_s8_chw(x, out, idx, c, h, wd, k, relu);
    return mp_const_none;
}

static mp_obj_t b_maxpool2d_bwd_s8_chw(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_maxpool2d_bwd_s8_chw;
    int32_t c, h, wd, k, nx, no, o;
    no = get_pool(fn, a + 3, &c, &h, &wd, &k, &nx);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, no, "c*(h//k)*(wd//k)");
    const uint8_t *idx = BUF(fn, MP_QSTR_idx, a[1], K_U8, READ, no, "c*(h//k)*(wd//k)");
    int8_t *out = BUF(fn, MP_QSTR_out, a[2], K_S8, WRITE, nx, "c*h*wd");
    const int8_t *y = NULL;
    if (n_args > 7 && a[7] != mp_const_none) {
        y = BUF(fn, MP_QSTR_y, a[7], K_S8, READ, no, "c*(h//k)*(wd//k)");
    }
    if (k < 16) {
        for (o = 0; o < no; o++) {
            /* issue 8: for 2 x 2 pooling, four offsets (< 4) per aligned word,
             * in a loop of their own (the checks above it cost more than the
             * test of a word) */
            if (k == 2 && PT_ALIGNED4(idx + o)) {
                while (o + 4 <= no && !(*(const pt_u32a *)(idx + o) & 0xFCFCFCFCu)) {
                    o += 4;
                }
                if (o == no) {
                    break;
                }
            }
            if (idx[o] >= k * k) {
                mp_obj_t it[5] = {Q(fn), INT(o), INT(idx[o]), INT(k * k), INT(k)};
                raise_fmt(&mp_type_ValueError, "%s: idx[%d] = %d is not a window offset (< %d for k=%d)", 5, it);
            }
        }
    }
    pt_maxpool2d_bwd_s8_chw(e, idx, out, c, h, wd, k, y);
    return mp_const_none;
}

static mp_obj_t b_argmax_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_argmax_s8;
    int32_t n = (int32_t)get_ranged(fn, MP_QSTR_n, a[1], 1, SIZE_MAX_ARG);
    const int8_t *x = BUF(fn, MP_QSTR_x, a[0], K_S8, READ, n, "n");
    return INT(pt_argmax_s8(x, n));
}

static mp_obj_t b_softmax_xent_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_softmax_xent_s8;
    int32_t n = (int32_t)get_ranged(fn, MP_QSTR_n, a[1], 1, PT_SOFTMAX_MAX_N);
    int32_t exp = get_shift(fn, MP_QSTR_exp, a[2]);
    int32_t label = (int32_t)get_ranged(fn, MP_QSTR_label, a[3], 0, n - 1);
    const int8_t *z = BUF(fn, MP_QSTR_z, a[0], K_S8, READ, n, "n");
    int8_t *err = BUF(fn, MP_QSTR_err, a[4], K_S8, WRITE, n, "n");
    int32_t *p = BUF(fn, MP_QSTR_p, a[5], K_S32, WRITE, n, "n");
    return INT(pt_softmax_xent_s8(z, n, exp, label, err, p));
}

static mp_obj_t b_update_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_update_s8;
    int32_t n = get_size(fn, MP_QSTR_n, a[2]);
    int32_t shift = get_shift(fn, MP_QSTR_shift, a[3]);
    int8_t *w = BUF(fn, MP_QSTR_w, a[0], K_S8, WRITE, n, "n");
    const int32_t *g = BUF(fn, MP_QSTR_g, a[1], K_S32, READ, n, "n");
    int32_t c0, c1;
    get_range(fn, n_args, a, 4, n, &c0, &c1);
    return INT(pt_update_s8(w, g, n, shift, c0, c1));
}

static mp_obj_t b_update_outer_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_update_outer_s8;
    int32_t n_out = get_size(fn, MP_QSTR_n_out, a[3]);
    int32_t n_in = (int32_t)get_ranged(fn, MP_QSTR_n_in, a[4], 0, PT_MAX_FANIN);
    int32_t nw = mul_size(fn, "n_out*n_in", n_out, n_in);
    int32_t mu = (int32_t)get_ranged(fn, MP_QSTR_mu, a[5], 0, 7);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, n_out, "n_out");
    const int8_t *x = BUF(fn, MP_QSTR_x, a[1], K_S8, READ, n_in, "n_in");
    int8_t *w = BUF(fn, MP_QSTR_w, a[2], K_S8, WRITE, nw, "n_out*n_in");
    int32_t c0, c1;
    get_range(fn, n_args, a, 6, n_out, &c0, &c1);
    return INT(pt_update_outer_s8(e, x, w, n_out, n_in, mu, c0, c1));
}

/* ------------------------------------------------ Tin-Tin, partial FQT -- */

static mp_obj_t b_rescale_s32_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_rescale_s32_s8;
    int32_t n = get_size(fn, MP_QSTR_n, a[2]);
    int32_t mul = (int32_t)get_ranged(fn, MP_QSTR_mul, a[3], 0, PT_RESCALE_MUL_MAX);
    int32_t shift = (int32_t)get_ranged(fn, MP_QSTR_shift, a[4], 0, PT_RESCALE_SHIFT_MAX);
    const int32_t *acc = BUF(fn, MP_QSTR_acc, a[0], K_S32, READ, n, "n");
    int8_t *out = BUF(fn, MP_QSTR_out, a[1], K_S8, WRITE, n, "n");
    return INT(pt_rescale_s32_s8(acc, out, n, (uint32_t)mul, shift));
}

static mp_obj_t b_topk_abs_s32(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_topk_abs_s32;
    int32_t n = get_size(fn, MP_QSTR_n, a[1]);
    int32_t k = (int32_t)get_ranged(fn, MP_QSTR_k, a[2], 0, n);
    const int32_t *g = BUF(fn, MP_QSTR_g, a[0], K_S32, READ, n, "n");
    int32_t *idx = BUF(fn, MP_QSTR_idx, a[3], K_S32, WRITE, k, "k");
    /* 2^31 (INT32_MIN's magnitude) is a long int on a 32-bit port: only
     * magnitudes >= 2^30 make the result allocate */
    return mp_obj_new_int_from_uint(pt_topk_abs_s32(g, n, k, idx));
}

/* ---------------------------------------------------- edge-popup (PRIOT) -- */

static mp_obj_t b_mask_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_mask_s8;
    pt_scores_t sc;
    int32_t n = get_size(fn, MP_QSTR_n, a[5]);
    int32_t thr = get_thr(fn, a[3]);
    const int8_t *w = BUF(fn, MP_QSTR_w, a[0], K_S8, READ, n, "n");
    get_scores(fn, a[1], a[2], n, 1, READ, &sc);
    int8_t *out = BUF(fn, MP_QSTR_out, a[4], K_S8, WRITE, n, "n");
    pt_mask_s8(w, &sc, thr, out, n);
    return mp_const_none;
}

static mp_obj_t b_fc_mask_s8_s32(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_fc_mask_s8_s32;
    pt_scores_t sc;
    int32_t n_in = get_size(fn, MP_QSTR_n_in, a[6]);
    int32_t n_out = get_size(fn, MP_QSTR_n_out, a[7]);
    int32_t nw = mul_size(fn, "n_in*n_out", n_in, n_out);
    int32_t thr = get_thr(fn, a[4]);
    check_fanin(fn, "n_in", n_in);
    const int8_t *x = BUF(fn, MP_QSTR_x, a[0], K_S8, READ, n_in, "n_in");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[1], K_S8, READ, nw, "n_in*n_out");
    get_scores(fn, a[2], a[3], nw, 1, READ, &sc);
    int32_t *out = BUF(fn, MP_QSTR_out, a[5], K_S32, WRITE, n_out, "n_out");
    int32_t c0, c1;
    get_range(fn, n_args, a, 8, n_out, &c0, &c1);
    pt_fc_mask_s8_s32(x, w, &sc, thr, out, n_in, n_out, c0, c1);
    return mp_const_none;
}

static mp_obj_t b_fc_t_mask_s8_s32(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_fc_t_mask_s8_s32;
    pt_scores_t sc;
    int32_t n_in = get_size(fn, MP_QSTR_n_in, a[6]);
    int32_t n_out = get_size(fn, MP_QSTR_n_out, a[7]);
    int32_t nw = mul_size(fn, "n_in*n_out", n_in, n_out);
    int32_t thr = get_thr(fn, a[4]);
    check_fanin(fn, "n_out", n_out);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, n_out, "n_out");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[1], K_S8, READ, nw, "n_in*n_out");
    get_scores(fn, a[2], a[3], nw, 1, READ, &sc);
    int32_t *out = BUF(fn, MP_QSTR_out, a[5], K_S32, WRITE, n_in, "n_in");
    pt_fc_t_mask_s8_s32(e, w, &sc, thr, out, n_in, n_out);
    return mp_const_none;
}

static mp_obj_t b_conv2d_mask_s8_s32_chw(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_conv2d_mask_s8_s32_chw;
    pt_scores_t sc;
    pt_conv2d_dims_t d;
    int32_t nx, nw, no;
    get_conv(fn, a + 6, FANIN_FWD, &d, &nx, &nw, &no);
    int32_t thr = get_thr(fn, a[4]);
    const int8_t *x = BUF(fn, MP_QSTR_x, a[0], K_S8, READ, nx, "c_in*h*wd");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[1], K_S8, READ, nw, "c_out*c_in*k*k");
    get_scores(fn, a[2], a[3], nw, 1, READ, &sc);
    int32_t *out = BUF(fn, MP_QSTR_out, a[5], K_S32, WRITE, no, "c_out*oh*ow");
    int32_t c0, c1;
    get_range(fn, n_args, a, 13, d.c_out, &c0, &c1);
    pt_conv2d_mask_s8_s32_chw(x, w, &sc, thr, out, &d, c0, c1);
    return mp_const_none;
}

static mp_obj_t b_conv2d_t_mask_s8_s32_chw(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_conv2d_t_mask_s8_s32_chw;
    pt_scores_t sc;
    pt_conv2d_dims_t d;
    int32_t nx, nw, no;
    get_conv(fn, a + 6, FANIN_T, &d, &nx, &nw, &no);
    int32_t thr = get_thr(fn, a[4]);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, no, "c_out*oh*ow");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[1], K_S8, READ, nw, "c_out*c_in*k*k");
    get_scores(fn, a[2], a[3], nw, 1, READ, &sc);
    int32_t *out = BUF(fn, MP_QSTR_out, a[5], K_S32, WRITE, nx, "c_in*h*wd");
    int32_t c0, c1;
    get_range(fn, n_args, a, 13, d.c_in, &c0, &c1);
    pt_conv2d_t_mask_s8_s32_chw(e, w, &sc, thr, out, &d, c0, c1);
    return mp_const_none;
}

/* conv2d_s8_s8_chw(x, w, out, acc, <geometry>, shift, bias, d[, c0, c1]) and
 * conv2d_mask_s8_s8_chw(x, w, scores, subset, thr, out, acc, <geometry>, ...):
 * a points at x, w; sc_args at scores (NULL: the unmasked form); o at out. */
static int32_t items_s32(mp_obj_t o) {
    mp_buffer_info_t bi;
    mp_get_buffer(o, &bi, MP_BUFFER_READ);
    return (int32_t)((bi.len >> 2) > (size_t)SIZE_MAX_ARG ? (size_t)SIZE_MAX_ARG : bi.len >> 2);
}

static mp_obj_t conv_q(qstr fn, size_t n_args, const mp_obj_t *a, const mp_obj_t *sc_args, const mp_obj_t *o) {
    const size_t n_fixed = (size_t)(o - a) + 12;   /* ..., out, acc, 7 geometry, shift, bias, d */
    pt_scores_t sc;
    pt_conv2d_dims_t d;
    int32_t nx, nw, no, plane, c0, c1, thr = 0;
    const int32_t *bias = NULL;
    get_conv(fn, o + 2, FANIN_FWD, &d, &nx, &nw, &no);
    int32_t shift = get_shift(fn, MP_QSTR_shift, o[9]);
    int32_t bd = get_shift(fn, MP_QSTR_d, o[11]);
    get_range(fn, n_args, a, n_fixed, d.c_out, &c0, &c1);
    plane = mul_size(fn, "oh*ow", d.oh, d.ow);
    const int8_t *x = BUF(fn, MP_QSTR_x, a[0], K_S8, READ, nx, "c_in*h*wd");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[1], K_S8, READ, nw, "c_out*c_in*k*k");
    if (sc_args != NULL) {
        thr = get_thr(fn, sc_args[2]);
        get_scores(fn, sc_args[0], sc_args[1], nw, 1, READ, &sc);
    }
    int8_t *out = BUF(fn, MP_QSTR_out, o[0], K_S8, WRITE, no, "c_out*oh*ow");
    /* one output plane at least; a longer scratch takes more channels per pass */
    int32_t *acc = BUF(fn, MP_QSTR_acc, o[1], K_S32, WRITE, plane > 0 ? plane : 1, "oh*ow, at least 1");
    if (o[10] != mp_const_none) {
        bias = BUF(fn, MP_QSTR_bias, o[10], K_S32, READ, d.c_out, "c_out");
    }
    return INT(pt_conv2d_mask_s8_s8_chw(x, w, sc_args != NULL ? &sc : NULL, thr, out, acc, items_s32(o[1]), &d,
                                        shift, bias, bd, c0, c1));
}

static mp_obj_t b_conv2d_s8_s8_chw(size_t n_args, const mp_obj_t *a) {
    return conv_q(MP_QSTR_conv2d_s8_s8_chw, n_args, a, NULL, a + 2);
}

static mp_obj_t b_conv2d_mask_s8_s8_chw(size_t n_args, const mp_obj_t *a) {
    return conv_q(MP_QSTR_conv2d_mask_s8_s8_chw, n_args, a, a + 2, a + 5);
}

static mp_obj_t b_fc_score_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_fc_score_s8;
    pt_scores_t sc;
    int32_t n_in = get_size(fn, MP_QSTR_n_in, a[7]);
    int32_t n_out = get_size(fn, MP_QSTR_n_out, a[8]);
    int32_t nw = mul_size(fn, "n_in*n_out", n_in, n_out);
    int32_t shift = get_shift(fn, MP_QSTR_shift, a[5]);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, n_out, "n_out");
    const int8_t *x = BUF(fn, MP_QSTR_x, a[1], K_S8, READ, n_in, "n_in");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[2], K_S8, READ, nw, "n_in*n_out");
    get_scores(fn, a[3], a[4], nw, 0, WRITE, &sc);
    int32_t smax = get_smax(fn, a[6], &sc);
    int32_t c0, c1;
    get_range(fn, n_args, a, 9, n_out, &c0, &c1);
    return INT(pt_fc_score_s8(e, x, w, &sc, shift, smax, n_in, n_out, c0, c1));
}

static mp_obj_t b_conv2d_score_s8_chw(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_conv2d_score_s8_chw;
    pt_scores_t sc;
    pt_conv2d_dims_t d;
    int32_t nx, nw, no;
    get_conv(fn, a + 7, FANIN_GRAD, &d, &nx, &nw, &no);
    int32_t shift = get_shift(fn, MP_QSTR_shift, a[5]);
    const int8_t *e = BUF(fn, MP_QSTR_e, a[0], K_S8, READ, no, "c_out*oh*ow");
    const int8_t *x = BUF(fn, MP_QSTR_x, a[1], K_S8, READ, nx, "c_in*h*wd");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[2], K_S8, READ, nw, "c_out*c_in*k*k");
    get_scores(fn, a[3], a[4], nw, 0, WRITE, &sc);
    int32_t smax = get_smax(fn, a[6], &sc);
    int32_t c0, c1;
    get_range(fn, n_args, a, 14, d.c_out, &c0, &c1);
    return INT(pt_conv2d_score_s8_chw(e, x, w, &sc, shift, smax, &d, c0, c1));
}

static mp_obj_t b_score_update_s8(size_t n_args, const mp_obj_t *a) {
    const qstr fn = MP_QSTR_score_update_s8;
    pt_scores_t sc;
    int32_t n = get_size(fn, MP_QSTR_n, a[6]);
    int32_t shift = get_shift(fn, MP_QSTR_shift, a[4]);
    get_scores(fn, a[0], a[1], n, 0, WRITE, &sc);
    const int32_t *g = BUF(fn, MP_QSTR_g, a[2], K_S32, READ, n, "n");
    const int8_t *w = BUF(fn, MP_QSTR_w, a[3], K_S8, READ, n, "n");
    int32_t smax = get_smax(fn, a[5], &sc);
    return INT(pt_score_update_s8(&sc, g, w, shift, smax, n));
}

/* ------------------------------------------------------------- module -- */

#define DEF(name, nargs) static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(name##_obj, nargs, nargs, b_##name)
/* a kernel with the optional channel range c0, c1 last */
#define DEF_RANGE(name, nargs) static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(name##_obj, nargs, nargs + 2, b_##name)
DEF(bitlen_s32, 2);
DEF(requant_s32_s8, 4);
DEF(bias_add_s32, 5);
DEF(acc_add_s32, 5);
DEF_RANGE(fc_s8_s32, 5);
DEF(fc_t_s8_s32, 5);
DEF_RANGE(outer_s8_s32, 5);
DEF_RANGE(conv2d_s8_s32_chw, 10);
DEF_RANGE(conv2d_t_s8_s32_chw, 10);
DEF_RANGE(conv2d_grad_s8_s32_chw, 10);
DEF(relu_s8, 2);
DEF(relu_bwd_s8, 3);
/* the pools' optional last argument: relu (forward), y (backward) */
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(maxpool2d_s8_chw_obj, 7, 8, b_maxpool2d_s8_chw);
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(maxpool2d_bwd_s8_chw_obj, 7, 8, b_maxpool2d_bwd_s8_chw);
DEF(argmax_s8, 2);
DEF(softmax_xent_s8, 6);
DEF_RANGE(update_s8, 4);
DEF_RANGE(update_outer_s8, 6);
DEF(rescale_s32_s8, 5);
DEF(topk_abs_s32, 4);
DEF(mask_s8, 6);
DEF_RANGE(fc_mask_s8_s32, 8);
DEF(fc_t_mask_s8_s32, 8);
DEF_RANGE(conv2d_mask_s8_s32_chw, 13);
DEF_RANGE(conv2d_t_mask_s8_s32_chw, 13);
DEF_RANGE(fc_score_s8, 9);
DEF_RANGE(conv2d_score_s8_chw, 14);
DEF(score_update_s8, 7);
/* issue 8: the fused forward, with an optional output-channel range c0, c1 */
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(conv2d_s8_s8_chw_obj, 14, 16, b_conv2d_s8_s8_chw);
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(conv2d_mask_s8_s8_chw_obj, 17, 19, b_conv2d_mask_s8_s8_chw);

#define STORE(name) mp_store_global(MP_QSTR_##name, MP_OBJ_FROM_PTR(&name##_obj))

mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY

    STORE(bitlen_s32);
    STORE(requant_s32_s8);
    STORE(bias_add_s32);
    STORE(acc_add_s32);
    STORE(fc_s8_s32);
    STORE(fc_t_s8_s32);
    STORE(outer_s8_s32);
    STORE(conv2d_s8_s32_chw);
    STORE(conv2d_t_s8_s32_chw);
    STORE(conv2d_grad_s8_s32_chw);
    STORE(relu_s8);
    STORE(relu_bwd_s8);
    STORE(maxpool2d_s8_chw);
    STORE(maxpool2d_bwd_s8_chw);
    STORE(argmax_s8);
    STORE(softmax_xent_s8);
    STORE(update_s8);
    STORE(update_outer_s8);
    STORE(rescale_s32_s8);
    STORE(topk_abs_s32);
    STORE(mask_s8);
    STORE(fc_mask_s8_s32);
    STORE(fc_t_mask_s8_s32);
    STORE(conv2d_mask_s8_s32_chw);
    STORE(conv2d_t_mask_s8_s32_chw);
    STORE(fc_score_s8);
    STORE(conv2d_score_s8_chw);
    STORE(score_update_s8);
    STORE(conv2d_s8_s8_chw);
    STORE(conv2d_mask_s8_s8_chw);

    MP_DYNRUNTIME_INIT_EXIT
}
