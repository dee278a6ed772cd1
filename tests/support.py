"""Small things several test files share (tests/ is on the import path, as for fp_bounds)."""

import time

# a tiny training run: a few seconds a step on 2 cores; ``dataset`` is filled in by each test
TINY = dict(dataset="", split="mini_train", arch="MinkUNet14", width=0.125, batch=1, pairs=256, lr=0.05,
            val_scenes=1, val_per_scene=1, val_per_class=50, val_every=1000, checkpoint_every=2, log_every=1, augment=False)


def wait_for(predicate, timeout: float = 240.0, every: float = 0.3, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def trace_values(value) -> list:
    """A plotly trace's values as a page sent them (plotly 6 sends arrays as typed base64 buffers)."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def minkowski_unet_layout(layers: tuple[int, ...], planes: tuple[int, ...], init: int, in_ch: int, out_ch: int,
                          stem_kernel: int = 3, final_bias: bool = True) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a MinkowskiEngine MinkUNet (SLidR's Res16UNet, OpenScene's MinkUNetBase) and
    its shape, written out from the architecture's definition, independently of relviz: convolution
    ``kernel`` [K^3, C_in, C_out] ([C_in, C_out] at K=1), no convolution bias, MinkowskiBatchNorm as
    ``.bn``; ``final`` a 1x1 convolution with a [1, C_out] bias when ``final_bias``."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(name, c):
        keys.update({f"{name}.bn.weight": (c,), f"{name}.bn.bias": (c,), f"{name}.bn.running_mean": (c,),
                     f"{name}.bn.running_var": (c,), f"{name}.bn.num_batches_tracked": ()})

    def layer(name, inplanes, p, n):  # ResNetBase._make_layer with ME's BasicBlock
        for b in range(n):
            cin = inplanes if b == 0 else p
            keys[f"{name}.{b}.conv1.kernel"] = (27, cin, p)
            bn(f"{name}.{b}.norm1", p)
            keys[f"{name}.{b}.conv2.kernel"] = (27, p, p)
            bn(f"{name}.{b}.norm2", p)
            if b == 0 and cin != p:
                keys[f"{name}.{b}.downsample.0.kernel"] = (cin, p)
                bn(f"{name}.{b}.downsample.1", p)
        return p

    keys["conv0p1s1.kernel"] = (stem_kernel ** 3, in_ch, init)
    bn("bn0", init)
    inplanes = init
    for i, name in enumerate(["conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"]):
        keys[f"{name}.kernel"] = (8, inplanes, inplanes)
        bn(f"bn{i + 1}", inplanes)
        inplanes = layer(f"block{i + 1}", inplanes, planes[i], layers[i])
    skips = [planes[2], planes[1], planes[0], init]
    for i, name in enumerate(["convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2"]):
        keys[f"{name}.kernel"] = (8, inplanes, planes[4 + i])
        bn(f"bntr{4 + i}", planes[4 + i])
        inplanes = layer(f"block{5 + i}", planes[4 + i] + skips[i], planes[4 + i], layers[4 + i])
    keys["final.kernel"] = (planes[7], out_ch)
    if final_bias:
        keys["final.bias"] = (1, out_ch)
    return keys


# a small experiment file (two losses; few-shot by the probe at 10% and 100%, fine-tuning at 10%) for
# tests that write its evaluations themselves: nothing of it trains unless a test runs it
SMALL_GRID = """[experiment]
name = "small"
seeds = [0, 1, 2]
[train]
max_steps = 10
[grid]
loss = ["relational", "contrastive"]
[evaluate]
val_scenes = 2
linear_probe = [0.1, 1.0]
finetune = [0.1]
"""
