"""tinyconv: an example model family for the workbench (docs/families.md shows this file as it is).

A stack of stride-2 conv-BN-activation layers, doubling the channels at each, then a pooled linear classifier.
The family's knobs are the builder's keywords, typed and ranged, so that study files, search spaces and `--set`
are checked before anything is built; torch is imported inside the builder, so reading a study file that names
the family does not load it.
"""

from workbench.arch.families import Family, Knob


def build(num_classes: int, width: int = 16, depth: int = 2, kernel: int = 3, act: str = "relu"):
    from torch import nn

    layers, channels = [], 3
    for i in range(depth):
        out = width * 2 ** i
        layers += [nn.Conv2d(channels, out, kernel, stride=2, padding=kernel // 2, bias=False),
                   nn.BatchNorm2d(out), nn.ReLU() if act == "relu" else nn.SiLU()]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


FAMILY = Family(
    "tinyconv", build,
    knobs=[Knob("width", int, 16, low=4, high=256, help="channels of the first layer"),
           Knob("depth", int, 2, low=1, high=5, help="stride-2 layers"),
           Knob("kernel", int, 3, choices=(3, 5)),
           Knob("act", str, "relu", choices=("relu", "silu"))],
    presets={"base": {}, "small": {"width": 8}, "deep": {"depth": 4}},
    description="stride-2 conv stacks: an example family",
    min_resolution=16,
)
