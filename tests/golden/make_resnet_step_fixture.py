#!/usr/bin/python3
"""Golden fixture for the engine end to end: one training step of a CIFAR-style
resnet10_xxxs in float64, computed by PyTorch (Debian's python3-torch, offline).

Writes resnet_step.safetensors with the initial weights ("init.<key>"), the batch ("x",
"y"), the logits, the mean cross-entropy, every parameter gradient ("grad.<key>") and the
weights after one SGD step with momentum 0.9, weight decay 5e-4, Nesterov ("step.<key>"),
with BatchNorm in training mode (running statistics updated; "step.<bn>.running_mean" etc.).
Run from this folder: /usr/bin/python3 make_resnet_step_fixture.py
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
from torch_cpu_peer import FAMILY, ResNet  # noqa: E402  (the same architecture as ours)

import safetensors_io  # noqa: E402


def main():
    torch.manual_seed(1234)
    widths, blocks = FAMILY["resnet10_xxxs"]
    model = ResNet(widths, blocks, channels=3, classes=5).double().train()
    # Non-trivial BatchNorm affine parameters and running statistics.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, 12, 12, dtype=torch.float64)
    y = torch.tensor([0, 4, 2, 1, 3, 2], dtype=torch.int64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    opt.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    out = {"x": x, "y": y, "logits": logits.detach(), "loss": loss.detach().reshape([])}
    out.update({"init." + k: v for k, v in init.items()})
    out.update({"grad." + k: v for k, v in grads.items()})
    out.update({"step." + k: v for k, v in model.state_dict().items()})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resnet_step.safetensors")
    safetensors_io.save(path, out, {"torch": torch.__version__, "arch": "resnet10_xxxs", "classes": "5"})
    print(f"wrote {path}: loss {loss.item():.12f}")


if __name__ == "__main__":
    main()
