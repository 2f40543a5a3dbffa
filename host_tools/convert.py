"""PyTorch float model -> picotrain int8 model.

Walks the modules in order (nested nn.Sequential flattened), maps
Conv2d / Linear / ReLU / MaxPool2d / Flatten, folds a BatchNorm that follows
a Conv2d or Linear into its weight and bias, drops Dropout and Identity (no
effect at inference), and refuses anything else with a clear message.

Weights: one power-of-two exponent per tensor, the smallest that keeps
max|w| / 2**exp <= 127, then round to nearest. Biases: int32 with their own
exponent, |b| < 2**22, so adding them to the int32 accumulator loses nothing
that matters. Inputs: int8 = pixel >> 1 with exponent -7 (data.py), which the
float model sees as (pixel >> 1) / 128.
"""
import math
from array import array

import numpy as np

import picotrain as pt

SUPPORTED = "Conv2d (square kernel, groups=1, dilation=1, symmetric padding), Linear, ReLU, " \
            "MaxPool2d (stride = kernel), Flatten, BatchNorm1d/2d after Conv2d/Linear, Dropout, Identity"


class UnsupportedLayer(ValueError):
    pass


def _flat_modules(module):
    from torch import nn
    if isinstance(module, nn.Sequential):
        out = []
        for child in module.children():
            out += _flat_modules(child)
        return out
    return [module]


def quantize(w):
    """float array -> (int8 values, exponent) with max|q| <= 127."""
    m = float(np.abs(w).max()) if w.size else 0.0
    if m == 0.0:
        return np.zeros(w.shape, np.int8), 0
    exp = math.ceil(math.log2(m / 127.0))
    q = np.round(w / 2.0 ** exp)
    if np.abs(q).max() > 127:  # log2 rounding at the edge
        exp += 1
        q = np.round(w / 2.0 ** exp)
    return q.astype(np.int8), exp


def quantize_bias(b):
    m = float(np.abs(b).max()) if b.size else 0.0
    if m == 0.0:
        return np.zeros(b.shape, np.int32), 0
    exp = math.floor(math.log2(m)) - 22
    return np.round(b / 2.0 ** exp).astype(np.int64).clip(-2**31 + 1, 2**31 - 1).astype(np.int32), exp


def _fold_bn(w, b, bn):
    """Fold y = bn(w x + b) into w' x + b' (per output channel)."""
    g = bn.weight.detach().double().numpy() if bn.affine else np.ones(bn.num_features)
    beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(bn.num_features)
    mean = bn.running_mean.detach().double().numpy()
    var = bn.running_var.detach().double().numpy()
    scale = g / np.sqrt(var + bn.eps)
    w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    b = (b if b is not None else 0.0) * scale + beta - mean * scale
    return w, b


def convert(module, in_shape, in_exp=-7):
    """A torch module (Sequential or a single layer) -> picotrain.Model."""
    from torch import nn
    mods = _flat_modules(module)
    layers = []
    pending = None  # (picotrain layer, float weight, float bias or None)
    i = 0

    def flush():
        nonlocal pending
        if pending is None:
            return
        layer, w, b = pending
        q, exp = quantize(w)
        layer.weight.data = array("b", q.ravel().tobytes())
        layer.weight.exp = exp
        if b is not None and np.any(b != 0):
            if layer.bias is None:
                layer.bias = array("i", bytes(4 * len(b)))
            qb, bexp = quantize_bias(np.asarray(b, np.float64))
            layer.bias[:] = array("i", qb.tobytes())
            layer.b_exp = bexp
        elif layer.bias is not None:
            layer.bias = None
        pending = None

    while i < len(mods):
        m = mods[i]
        where = "layer %d (%s)" % (i, type(m).__name__)
        if isinstance(m, nn.Conv2d):
            flush()
            k = m.kernel_size
            pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
            if (k[0] != k[1] or m.stride[0] != m.stride[1] or pad[0] != pad[1] or m.groups != 1
                    or m.dilation != (1, 1) or m.padding_mode != "zeros"):
                raise UnsupportedLayer("%s: only square kernels, equal strides and padding, groups=1, "
                                       "dilation=1, zero padding are supported" % where)
            layer = pt.Conv2d(m.in_channels, m.out_channels, k[0], m.stride[0], pad[0], bias=True)
            b = m.bias.detach().double().numpy() if m.bias is not None else None
            pending = (layer, m.weight.detach().double().numpy(), b)
            layers.append(layer)
        elif isinstance(m, nn.Linear):
            flush()
            layer = pt.Linear(m.in_features, m.out_features, bias=True)
            b = m.bias.detach().double().numpy() if m.bias is not None else None
            pending = (layer, m.weight.detach().double().numpy(), b)
            layers.append(layer)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if pending is None or layers[-1] is not pending[0]:
                raise UnsupportedLayer("%s: BatchNorm must directly follow a Conv2d or Linear to be folded" % where)
            layer, w, b = pending
            w, b = _fold_bn(w, b, m)
            pending = (layer, w, b)
        elif isinstance(m, nn.ReLU):
            flush()
            layers.append(pt.ReLU())
        elif isinstance(m, nn.MaxPool2d):
            flush()
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            st = m.stride if isinstance(m.stride, int) else m.stride[0]
            if st != k or m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                raise UnsupportedLayer("%s: only MaxPool2d with stride = kernel, no padding" % where)
            layers.append(pt.MaxPool2d(k))
        elif isinstance(m, nn.Flatten):
            flush()
            layers.append(pt.Flatten())
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            pass
        else:
            raise UnsupportedLayer("%s is not supported by picotrain; supported: %s" % (where, SUPPORTED))
        i += 1
    flush()
    return pt.Model(layers, in_shape, in_exp)


def convert_checkpoint(path):
    """A checkpoint written by `picotrain pretrain` -> picotrain.Model."""
    import torch
    from host_tools import models
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "state_dict" not in ck or "arch" not in ck:
        raise ValueError("%s: not a picotrain pretrain checkpoint (needs 'arch' and 'state_dict'); "
                         "for other models call host_tools.convert.convert(module, in_shape)" % path)
    net = models.build(ck["arch"])
    net.load_state_dict(ck["state_dict"])
    m = convert(net.eval(), models.input_shape(ck["arch"]), ck.get("input_exp", -7))
    m.meta = {"arch": ck["arch"]}
    return m
