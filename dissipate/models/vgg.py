"""VGG with batch norm: the classic plain net.

With the imagenet head and 1000 classes, module names and parameter counts are torchvision's `vggN_bn`, so its
weights load as they are; like torchvision's, the convs keep their bias. The cifar head replaces the three-layer
classifier by global average pooling and one linear layer.

References:
    Simonyan and Zisserman. Very Deep Convolutional Networks for Large-Scale Image Recognition. ICLR 2015.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ._layers import ACTIVATIONS, init_he_normal, make_act
from ._registry import register_model

POOL = "M"
CONFIGS: dict[int, list[int | str]] = {
    11: [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    13: [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    16: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL],
    19: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL],
}


class VGG(nn.Module):
    def __init__(self, config: list[int | str], *, num_classes: int = 10, in_chans: int = 3, stem: str = "imagenet",
                 act: str = "relu", dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        chs = in_chans
        for item in config:
            if item == POOL:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(chs, item, kernel_size=3, padding=1), nn.BatchNorm2d(item), make_act(act)]
                chs = item
        self.features = nn.Sequential(*layers)
        if stem == "imagenet":
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(chs * 7 * 7, 4096), make_act(act), nn.Dropout(dropout),
                nn.Linear(4096, 4096), make_act(act), nn.Dropout(dropout),
                nn.Linear(4096, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(chs, num_classes)
        act_types = tuple(ACTIVATIONS.values())
        self.site_kinds = {name: "plain" for name, module in self.named_modules() if isinstance(module, act_types)}
        init_he_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))  # (B, 512, 7, 7) or (B, 512, 1, 1)
        return self.classifier(torch.flatten(x, 1))


def build_vgg(depth: int, *, num_classes: int = 10, in_chans: int = 3, stem: str = "imagenet", act: str = "relu",
              dropout: float = 0.5) -> VGG:
    """VGG-`depth` with batch norm; `stem` picks the head."""
    return VGG(CONFIGS[depth], num_classes=num_classes, in_chans=in_chans, stem=stem, act=act, dropout=dropout)


for _depth in CONFIGS:
    register_model(f"vgg{_depth}", partial(build_vgg, _depth), family="vgg", depth=_depth, natural_stem="imagenet")
