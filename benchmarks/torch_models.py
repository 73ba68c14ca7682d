"""ResNet-18-, MobileNetV2- and MobileNetV3-shaped torch models with random weights, and their
export.

Shared by benchmarks/bench_models.py and tests/test_model_onnx.py. The layer structure is
torchvision's (BasicBlock with a stride-2 1x1 downsample; inverted residuals with 1x1 expand,
depthwise 3x3, ReLU6, 1x1 project; MobileNetV3-Large's blocks with Hardswish and
squeeze-and-excitation gates); ``width`` scales every channel count so tests can use
small models. ``randomized(model, x)`` gives BatchNorm non-trivial statistics: random scale
and shift, then running mean/variance measured on the data in ``x`` (as training would).
"""
import warnings

import torch
from torch import nn

__all__ = ["ResNet18", "MobileNetV2", "MobileNetV3", "randomized", "export"]


def _bn_relu(c, relu6=False):
    return [nn.BatchNorm2d(c), nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True)]


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision's resnet18 layout; ``width`` scales the channels (64 * width first)."""

    def __init__(self, num_classes=1000, width=1.0):
        super().__init__()
        c = [max(8, int(64 * width * 2 ** i)) for i in range(4)]
        self.stem = nn.Sequential(nn.Conv2d(3, c[0], 7, 2, 3, bias=False), *_bn_relu(c[0]),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], c[0]
        for i, cout in enumerate(c):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), *_bn_relu(hidden, True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   *_bn_relu(hidden, True),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 layout; ``width`` is its width multiplier."""

    # expansion t, channels c, repeats n, first stride s
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=1000, width=1.0):
        super().__init__()
        ch = (lambda c: max(8, int(c * width + 4) // 8 * 8))  # torchvision's divisible-by-8
        cin, last = ch(32), ch(1280) if width > 1.0 else 1280
        layers = [nn.Conv2d(3, cin, 3, 2, 1, bias=False), *_bn_relu(cin, True)]
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        layers += [nn.Conv2d(cin, last, 1, bias=False), *_bn_relu(last, True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _div8(c):
    """torchvision's _make_divisible(c, 8)."""
    r = max(8, int(c + 4) // 8 * 8)
    return r + 8 if r < 0.9 * c else r


class SqueezeExcitation(nn.Module):
    """x * hardsigmoid(fc2(relu(fc1(avgpool(x))))), the 1x1 convs with biases."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.relu, self.gate = nn.ReLU(inplace=True), nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class V3Block(nn.Module):
    """MobileNetV3's inverted residual: 1x1 expand, k x k depthwise, optional SE, 1x1
    project; Hardswish ("HS") or ReLU ("RE")."""

    def __init__(self, cin, k, hidden, cout, se, act, stride):
        super().__init__()
        a = nn.Hardswish if act == "HS" else nn.ReLU
        layers = []
        if hidden != cin:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), a()]
        layers += [nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), a()]
        if se:
            layers.append(SqueezeExcitation(hidden, _div8(hidden // 4)))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV3(nn.Module):
    """torchvision's mobilenet_v3_large layout; ``width`` is its width multiplier."""

    # input, kernel, expanded, output, SE, activation, stride
    SETTINGS = [(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2),
                (24, 3, 72, 24, False, "RE", 1), (24, 5, 72, 40, True, "RE", 2),
                (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
                (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1),
                (80, 3, 184, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
                (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
                (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1),
                (160, 5, 960, 160, True, "HS", 1)]

    def __init__(self, num_classes=1000, width=1.0):
        super().__init__()
        ch = (lambda c: _div8(c * width))
        layers = [nn.Conv2d(3, ch(16), 3, 2, 1, bias=False), nn.BatchNorm2d(ch(16)),
                  nn.Hardswish()]
        for cin, k, hidden, cout, se, act, stride in self.SETTINGS:
            layers.append(V3Block(ch(cin), k, ch(hidden), ch(cout), se, act, stride))
        last = ch(160) * 6
        layers += [nn.Conv2d(ch(160), last, 1, bias=False), nn.BatchNorm2d(last),
                   nn.Hardswish()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, _div8(1280 * width)), nn.Hardswish(),
                                        nn.Dropout(0.2), nn.Linear(_div8(1280 * width),
                                                                   num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def randomized(model, x, seed=0):
    """``model`` in eval mode with BatchNorm scale/shift drawn at random and running
    mean/variance measured on the batches in ``x`` (an iterable of input tensors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the batches below
        model.train()
        for xb in x:
            model(xb)
    return model.eval()


def export(model, path, input_shape, opset=17):
    """Export ``model`` to ONNX at ``path`` for inputs ``(batch,) + input_shape``, with a
    dynamic batch axis (input "input", output "logits"); BatchNorm is folded by the exporter."""
    x = torch.zeros((1,) + tuple(input_shape))
    with warnings.catch_warnings():  # "legacy TorchScript-based exporter": chosen on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), (x,), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path
