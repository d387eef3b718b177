"""The networks the benchmarks time, by bench name: (registry name, kwargs, input shape).

One table for ``run.py``, ``weight_matching.py`` and ``members_axis.py``; the PyTorch reference
(``torch_reference.py``) takes the same kwargs.
"""

MODELS = {
    "resnet20_w1": ("resnet20", {"width": 1}, (32, 32, 3)),
    "resnet20_w2": ("resnet20", {"width": 2}, (32, 32, 3)),
    # the reduced map's ResNet-20 (configs/reproduce_map.py:resnet20): width 1, LayerNorm, Fashion-MNIST's shape
    "resnet20_w1_28": ("resnet20", {"width": 1}, (28, 28, 1)),
    "cnn": ("cnn", {}, (28, 28, 1)),
    "cnn_16_32": ("cnn", {"channels": (16, 32)}, (28, 28, 1)),  # the map's CNN
    "mlp": ("mlp", {}, (28, 28, 1)),
}
# the training batch every bench step uses (bench/run.py; reproduction/cost.py prices only runs at this batch)
BATCH = 128
# the networks with convolutions (``conv=`` picks their implementation)
CONV_MODELS = tuple(m for m, (name, _, _) in MODELS.items() if name != "mlp")
