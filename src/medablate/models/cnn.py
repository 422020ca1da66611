"""medablate's own convolutional network, sized for CPUs: plain 3x3 convolutions (depthwise ones train slowly on
CPU in PyTorch), BatchNorm and ReLU, stride-2 downsampling, global average pooling, dropout, a linear head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, StrictInt, model_validator
from torch import nn

from medablate.config.base import ModelBase
from medablate.models import InputShape, register_model


class CNNConfig(ModelBase):
    """medablate's CPU-fast network: a stride-2 stem, then stages of 3x3 conv-BN-ReLU blocks (the first of each
    later stage with stride 2), global average pooling, dropout and a linear head."""

    name: Literal["cnn"] = "cnn"
    widths: list[StrictInt] = Field(default_factory=lambda: [32, 64, 128, 256], description="channels per stage")
    blocks: list[StrictInt] = Field(default_factory=lambda: [1, 1, 1, 1], description="blocks per stage")
    residual: bool = Field(True, description="blocks of two convolutions with a skip connection (else one conv)")
    stem_stride: StrictInt = Field(2, ge=1, le=4, description="stride of the first convolution")
    dropout: float = Field(0.2, ge=0, lt=1, description="before the linear head")

    @model_validator(mode="after")
    def _stage_lists(self) -> CNNConfig:
        if not self.widths or len(self.widths) != len(self.blocks):
            raise ValueError(f"widths ({len(self.widths)} stages) and blocks ({len(self.blocks)} stages) must name the "
                             "same, non-zero number of stages, e.g. widths: [24, 48, 96, 192], blocks: [1, 1, 1, 1]")
        if any(w < 1 for w in self.widths) or any(b < 1 for b in self.blocks):
            raise ValueError(f"widths and blocks must be positive: got {self.widths}, {self.blocks}")
        return self

    def describe(self, start: str) -> str:
        return (f"a convolutional network (medablate's cnn: stages of {', '.join(map(str, self.widths))} channels with "
                f"{', '.join(map(str, self.blocks))} {'residual ' if self.residual else ''}blocks of 3x3 "
                f"convolution-BatchNorm-ReLU, global average pooling, dropout {self.dropout}){start}")


def conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


class PlainBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN with ReLU between, plus the input (through a strided 1x1 conv-BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout))
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.skip(x))


class CNN(nn.Module):
    """MONAI-style signature: spatial_dims, in_channels, out_channels. `features` ends with the last convolutional
    stage (Grad-CAM's layer)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, widths: Sequence[int] = (32, 64, 128, 256),
                 blocks: Sequence[int] = (1, 1, 1, 1), residual: bool = True, stem_stride: int = 2,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"CNN is two-dimensional (spatial_dims 2), not {spatial_dims}")
        block = ResidualBlock if residual else PlainBlock
        layers: list[nn.Module] = [nn.Sequential(*conv_bn(in_channels, widths[0], stem_stride), nn.ReLU(inplace=True))]
        width = widths[0]
        for stage, (out, count) in enumerate(zip(widths, blocks, strict=False)):
            members = [block(width if i == 0 else out, out, 2 if stage > 0 and i == 0 else 1) for i in range(count)]
            layers.append(nn.Sequential(*members))
            width = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, out_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))


@register_model("cnn", CNNConfig, convolutional=True, summary="medablate's CPU-fast CNN: 3x3 conv-BN-ReLU stages, residual")
def cnn(config: CNNConfig, shape: InputShape, num_outputs: int) -> CNN:
    return CNN(2, shape[0], num_outputs, config.widths, config.blocks, config.residual, config.stem_stride,
               config.dropout)
