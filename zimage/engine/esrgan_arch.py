"""The ESRGAN family's two networks, built from a safetensors state dict: RRDBNet (ESRGAN,
Real-ESRGAN x4plus/x2plus, 4x-UltraSharp and most community "4x-" models) and Real-ESRGAN's
compact SRVGGNetCompact (realesr-general-x4v3, the animevideo models).

Not spandrel (issue 32 named it): spandrel 0.4.2 imports torchvision at `import spandrel` (its
RestoreFormer and LaMa architectures), and PyPI's torchvision does not import beside this
project's torch 2.13 CPU wheel ("operator torchvision::nms does not exist", checked 2025 on this
machine). These two architectures are the ones people use for Z-Image upscaling (research
turn3-models.md section 7) and fit in this file; their layer names are basicsr's, so the files
load as Real-ESRGAN writes them. The old ESRGAN key layout (`model.0.weight`, `model.1.sub.N...`)
is renamed to basicsr's first, as spandrel and basicsr do. Weights come only from safetensors:
never a pickle (store.upscalers lists .pth files as refused).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..store.upscalers import describe_shapes, rename_old_esrgan


class _ResidualDenseBlock(nn.Module):
    def __init__(self, feat: int, grow: int):
        super().__init__()
        self.conv1 = nn.Conv2d(feat, grow, 3, 1, 1)
        self.conv2 = nn.Conv2d(feat + grow, grow, 3, 1, 1)
        self.conv3 = nn.Conv2d(feat + 2 * grow, grow, 3, 1, 1)
        self.conv4 = nn.Conv2d(feat + 3 * grow, grow, 3, 1, 1)
        self.conv5 = nn.Conv2d(feat + 4 * grow, feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, feat: int, grow: int):
        super().__init__()
        self.rdb1 = _ResidualDenseBlock(feat, grow)
        self.rdb2 = _ResidualDenseBlock(feat, grow)
        self.rdb3 = _ResidualDenseBlock(feat, grow)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """basicsr's RRDBNet: x2 and x1 models see the picture pixel-unshuffled (4 or 16 x 3 channels)."""

    def __init__(self, scale: int, feat: int, blocks: int, grow: int):
        super().__init__()
        self.scale = scale
        in_ch = 3 * {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(in_ch, feat, 3, 1, 1)
        self.body = nn.Sequential(*(_RRDB(feat, grow) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        if self.scale < 4:
            # the tiler pads tiles to even sizes (x2) / multiples of 4 (x1): pixel_unshuffle needs it
            x = F.pixel_unshuffle(x, 4 // self.scale)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact net (PReLU activations): convs, a pixel shuffle, plus the input
    upsampled by nearest neighbour."""

    def __init__(self, scale: int, feat: int, convs: int):
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, feat, 3, 1, 1), nn.PReLU(feat)]
        for _ in range(convs):
            layers += [nn.Conv2d(feat, feat, 3, 1, 1), nn.PReLU(feat)]
        layers.append(nn.Conv2d(feat, 3 * scale * scale, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        out = F.pixel_shuffle(self.body(x), self.scale)
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def build(state: dict) -> nn.Module:
    """The network a state dict is for, its weights loaded (strict), in eval mode. ValueError
    (with the reason store.upscalers gives) for another architecture."""
    state = rename_old_esrgan(state)
    info = describe_shapes({k: tuple(v.shape) for k, v in state.items()})
    if info.refused:
        raise ValueError(info.refused)
    if info.arch == "RRDBNet":
        net: nn.Module = RRDBNet(info.scale, info.features, info.blocks, info.grow)
    else:
        net = SRVGGNetCompact(info.scale, info.features, info.blocks)
    net.load_state_dict(state, strict=True)
    return net.eval()
