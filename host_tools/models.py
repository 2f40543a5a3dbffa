"""Reference models, described once as plain layer specs and built with PyTorch.

The spec list is the single description of an architecture: `build` makes
the torch model from it and the converter maps the same list to the device,
so the two cannot disagree. All layers are bias-free (NITI / PRIOT style:
int8 training on the device has no bias terms). In the built nn.Sequential,
the module at position i is spec i, so a trained layer's weights are
state_dict["<i>.weight"].

Layer specs:
    ("conv2d",    dict(c_in, c_out, k, stride, pad))   square kernel
    ("relu",      {})
    ("maxpool2d", dict(k))                              stride k
    ("flatten",   {})
    ("linear",    dict(n_in, n_out))
"""

import copy


def _conv(c_in, c_out, k, pad=0):
    return ("conv2d", dict(c_in=c_in, c_out=c_out, k=k, stride=1, pad=pad))


_RELU, _POOL, _FLATTEN = ("relu", {}), ("maxpool2d", dict(k=2)), ("flatten", {})

# name -> (input shape (C, H, W), layer specs)
ARCHITECTURES = {
    # The PRIOT paper's tiny CNN for 28x28 MNIST; no padding: 28 -> 24 -> 12 -> 8 -> 4.
    "tiny_cnn": ((1, 28, 28), [
        _conv(1, 8, 5), _RELU, _POOL,
        _conv(8, 16, 5), _RELU, _POOL,
        _FLATTEN,
        ("linear", dict(n_in=256, n_out=64)), _RELU,
        ("linear", dict(n_in=64, n_out=10)),
    ]),
    # The same shape of network for 8x8 digits; padding keeps 8 -> 8 -> 4 -> 4 -> 2.
    "tiny_cnn_digits": ((1, 8, 8), [
        _conv(1, 8, 3, pad=1), _RELU, _POOL,
        _conv(8, 16, 3, pad=1), _RELU, _POOL,
        _FLATTEN,
        ("linear", dict(n_in=64, n_out=32)), _RELU,
        ("linear", dict(n_in=32, n_out=10)),
    ]),
}
NAMES = tuple(ARCHITECTURES)


def _get(name):
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose from {NAMES}")
    return ARCHITECTURES[name]


def input_shape(name):
    """(C, H, W) of one input sample."""
    return _get(name)[0]


def layer_specs(name):
    """The architecture as a list of (kind, params) (a copy: safe to modify)."""
    return copy.deepcopy(_get(name)[1])


def _conv_size(n, p):
    return (n + 2 * p["pad"] - p["k"]) // p["stride"] + 1


def output_shapes(name):
    """Shape of each layer's output, computed from the specs (checks they chain)."""
    shape = input_shape(name)
    shapes = []
    for kind, p in layer_specs(name):
        if kind == "conv2d":
            c, h, w = shape
            if c != p["c_in"]:
                raise ValueError(f"{name}: conv2d expects {p['c_in']} channels, gets {c}")
            shape = (p["c_out"], _conv_size(h, p), _conv_size(w, p))
        elif kind == "maxpool2d":
            c, h, w = shape
            shape = (c, h // p["k"], w // p["k"])
        elif kind == "flatten":
            n = 1
            for d in shape:
                n *= d
            shape = (n,)
        elif kind == "linear":
            if shape != (p["n_in"],):
                raise ValueError(f"{name}: linear expects {p['n_in']} inputs, gets {shape}")
            shape = (p["n_out"],)
        elif kind != "relu":
            raise ValueError(f"{name}: unknown layer kind {kind!r}")
        shapes.append(shape)
    return shapes


def build(name):
    """A bias-free torch nn.Sequential for the named architecture."""
    from torch import nn

    modules = []
    for kind, p in layer_specs(name):
        if kind == "conv2d":
            modules.append(nn.Conv2d(p["c_in"], p["c_out"], p["k"], stride=p["stride"],
                                     padding=p["pad"], bias=False))
        elif kind == "relu":
            modules.append(nn.ReLU())
        elif kind == "maxpool2d":
            modules.append(nn.MaxPool2d(p["k"]))
        elif kind == "flatten":
            modules.append(nn.Flatten())
        elif kind == "linear":
            modules.append(nn.Linear(p["n_in"], p["n_out"], bias=False))
        else:
            raise ValueError(f"{name}: no torch module for layer kind {kind!r}")
    return nn.Sequential(*modules)
