#!/usr/bin/python3
"""Golden fixture for one full MC-Distil iteration in float64, computed by PyTorch (Debian's
python3-torch, offline) the way the released MC-Distil code does it: the meta-gradient is the
create_graph double backward through a differentiable SGD lookahead, not our forward-mode JVP,
so the two implementations share nothing but the algorithm of DESIGN.md §3.

The iteration: two students (resnet10_xxxs with plain momentum, resnet10_xxs with Nesterov),
existing SGD momentum buffers, a C-Net (headless resnet10_xxxs + Linear(16 -> 2K) + sigmoid),
BatchNorm in training mode everywhere, tau = 2.
  META STEP  w = cnet(x); per student a functional copy (real parameters, copied buffers),
             L_k(theta; w), g = grad(L_k, theta, create_graph), theta' = the SGD step,
             M_k = ce(student(xv; theta'), yv); M = sum_k M_k; dM/dphi; Adam step on the C-Net.
  NORMAL     w2 = cnet(x) detached; per student L_k(theta; w2), backward, SGD step.
Keys: inputs "x" "y" "xv" "yv" "teacher_logits"; initial states "student{k}.<key>",
"student{k}.buffer.<param>" (momentum buffers), "cnet.<key>"; outputs "meta.weights",
"meta.student_losses", "meta.meta_losses", "meta.weight_grad" (dM/dw), "meta.cnet_grad.<param>",
"normal.weights", "normal.student_losses", "after.cnet.<key>", "after.student{k}.<key>".
Run from anywhere: /usr/bin/python3 make_meta_step_fixture.py
"""
import copy
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.stateless import functional_call

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks"))
from torch_cpu_peer import FAMILY, ResNet  # noqa: E402  (the same architecture and keys as ours)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

CHANNELS, SIZE, CLASSES = 3, 12, 5
B_TRAIN, B_VAL = 6, 5
TAU = 2.0
STUDENTS = [
    {"arch": "resnet10_xxxs", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "dampening": 0.0, "nesterov": False},
    {"arch": "resnet10_xxs", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "dampening": 0.0, "nesterov": True},
]
CNET_ARCH = "resnet10_xxxs"
ADAM = {"lr": 1e-3, "weight_decay": 1e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


class HeadlessResNet(ResNet):
    """The ResNet without fc: pooled, flattened features (our ResNet::forward_features)."""

    def __init__(self, widths, blocks, channels):
        super().__init__(widths, blocks, channels, classes=1)
        del self.fc

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class CNet(nn.Module):
    """The "image" input and "sigmoid" head: column 2k = alpha_k, 2k + 1 = beta_k."""

    def __init__(self, arch, channels, num_students):
        super().__init__()
        widths, blocks = FAMILY[arch]
        self.backbone = HeadlessResNet(widths, blocks, channels)
        self.head = nn.Linear(widths[3], 2 * num_students)

    def forward(self, x):
        return torch.sigmoid(self.head(self.backbone(x)))


def randomise_batch_norm(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
                m.num_batches_tracked.fill_(3)


def distill_loss(z, y, teacher_logits, alpha, beta):
    """L = mean_i(alpha_i ce_i + tau^2 beta_i kl_i) as DESIGN.md §3 (differentiable in all)."""
    ce = F.cross_entropy(z, y, reduction="none")
    log_qt = F.log_softmax(teacher_logits / TAU, dim=1)
    kl = (log_qt.exp() * (log_qt - F.log_softmax(z / TAU, dim=1))).sum(1)
    return (alpha * ce + TAU**2 * beta * kl).mean()


def sgd_lookahead(p, g, buf, hp):
    """theta' exactly as torch.optim.SGD.step would leave p (buffer present), differentiable."""
    d = g + hp["weight_decay"] * p
    b = buf * hp["momentum"] + (1 - hp["dampening"]) * d
    d = d + hp["momentum"] * b if hp["nesterov"] else b
    return p - hp["lr"] * d


def buffer_copies(model):
    return {n: b.clone() for n, b in model.named_buffers()}


def meta_objective(students, cnet, x, y, xv, yv, teacher_logits):
    """w, L_k (at theta with w) and M_k (at theta'), with the graph from M back to phi."""
    w = cnet(x)
    losses, meta_losses = [], []
    for k, s in enumerate(students):
        model = s["model"]
        params = dict(model.named_parameters())
        z = functional_call(model, {**params, **buffer_copies(model)}, (x,))
        loss = distill_loss(z, y, teacher_logits, w[:, 2 * k], w[:, 2 * k + 1])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        ahead = {n: sgd_lookahead(p, g, s["buffers"][n], s["hp"]) for (n, p), g in zip(params.items(), grads)}
        zv = functional_call(model, {**ahead, **buffer_copies(model)}, (xv,))
        losses.append(loss)
        meta_losses.append(F.cross_entropy(zv, yv).mean())
    return w, torch.stack(losses), torch.stack(meta_losses)


def check_against_finite_differences(students, cnet_init, cnet_grads, data, rng):
    """The double-backward result against central differences of M along random directions."""
    shapes = {n: p.shape for n, p in cnet_init.named_parameters()}
    for trial in range(3):
        direction = {n: torch.randn(shape, generator=rng, dtype=torch.float64) for n, shape in shapes.items()}
        exact = sum((cnet_grads[n] * direction[n]).sum() for n in shapes).item()
        h = 1e-6  # ReLU kinks in the C-Net lie within 1e-4 of phi along some directions
        values = []
        for sign in (1.0, -1.0):
            c = copy.deepcopy(cnet_init)
            with torch.no_grad():
                for n, p in c.named_parameters():
                    p.add_(sign * h * direction[n])
            values.append(meta_objective(students, c, *data)[2].sum().item())
        numeric = (values[0] - values[1]) / (2 * h)
        rel = abs(numeric - exact) / max(abs(exact), 1e-12)
        print(f"finite-difference check {trial}: exact {exact:.12e} numeric {numeric:.12e} rel {rel:.2e}")
        assert rel < 1e-6, "double-backward meta-gradient disagrees with finite differences"


def main():
    torch.manual_seed(2024)
    rng = torch.Generator().manual_seed(7)
    torch.set_default_dtype(torch.float64)

    x = torch.randn(B_TRAIN, CHANNELS, SIZE, SIZE)
    y = torch.tensor([0, 4, 2, 1, 3, 2], dtype=torch.int64)
    xv = torch.randn(B_VAL, CHANNELS, SIZE, SIZE)
    yv = torch.tensor([3, 1, 0, 4, 2], dtype=torch.int64)
    teacher_logits = 2.0 * torch.randn(B_TRAIN, CLASSES)

    students = []
    for hp in STUDENTS:
        widths, blocks = FAMILY[hp["arch"]]
        model = ResNet(widths, blocks, CHANNELS, CLASSES).train()
        randomise_batch_norm(model)
        buffers = {n: 0.05 * torch.randn(p.shape) for n, p in model.named_parameters()}
        students.append({"model": model, "hp": hp, "buffers": buffers})
    cnet = CNet(CNET_ARCH, CHANNELS, len(students)).train()
    randomise_batch_norm(cnet)
    with torch.no_grad():
        cnet.head.weight.mul_(4.0)  # spread the sigmoid outputs over (0, 1)

    out = {"x": x, "y": y, "xv": xv, "yv": yv, "teacher_logits": teacher_logits}
    for k, s in enumerate(students):
        out.update({f"student{k}.{n}": t.clone() for n, t in s["model"].state_dict().items()})
        out.update({f"student{k}.buffer.{n}": b.clone() for n, b in s["buffers"].items()})
    out.update({f"cnet.{n}": t.clone() for n, t in cnet.state_dict().items()})
    cnet_init = copy.deepcopy(cnet)
    student_init = [copy.deepcopy(s["model"].state_dict()) for s in students]

    # ---- meta step
    data = (x, y, xv, yv, teacher_logits)
    w, losses, meta_losses = meta_objective(students, cnet, *data)
    cnet_params = list(cnet.parameters())
    grads = torch.autograd.grad(meta_losses.sum(), [w] + cnet_params)
    cnet_grads = {n: g for (n, _), g in zip(cnet.named_parameters(), grads[1:])}
    for k, s in enumerate(students):
        for n, t in s["model"].state_dict().items():
            assert torch.equal(t, student_init[k][n]), f"the meta step changed student{k}.{n}"
    check_against_finite_differences(students, cnet_init, cnet_grads, data, rng)
    adam = torch.optim.Adam(cnet_params, lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"],
                            weight_decay=ADAM["weight_decay"])
    for p, g in zip(cnet_params, grads[1:]):
        p.grad = g.detach().clone()
    adam.step()
    out.update({"meta.weights": w.detach(), "meta.student_losses": losses.detach(),
                "meta.meta_losses": meta_losses.detach(), "meta.weight_grad": grads[0]})
    out.update({f"meta.cnet_grad.{n}": g for n, g in cnet_grads.items()})

    # ---- normal step
    with torch.no_grad():
        w2 = cnet(x)
    normal_losses = []
    for k, s in enumerate(students):
        model, hp = s["model"], s["hp"]
        opt = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=hp["momentum"], dampening=hp["dampening"],
                              weight_decay=hp["weight_decay"], nesterov=hp["nesterov"])
        for n, p in model.named_parameters():
            opt.state[p]["momentum_buffer"] = s["buffers"][n].clone()
        opt.zero_grad()
        loss = distill_loss(model(x), y, teacher_logits, w2[:, 2 * k], w2[:, 2 * k + 1])
        loss.backward()
        # The lookahead rule must be torch.optim.SGD's step (to rounding: ATen fuses a + alpha * b).
        with torch.no_grad():
            expected = {n: sgd_lookahead(p, p.grad, s["buffers"][n], hp) for n, p in model.named_parameters()}
        opt.step()
        for n, p in model.named_parameters():
            assert torch.allclose(p, expected[n], rtol=1e-14, atol=1e-16), f"lookahead != SGD step: student{k}.{n}"
        normal_losses.append(loss.detach())
        out.update({f"after.student{k}.{n}": t.clone() for n, t in model.state_dict().items()})
    out.update({"normal.weights": w2, "normal.student_losses": torch.stack(normal_losses)})
    out.update({f"after.cnet.{n}": t.clone() for n, t in cnet.state_dict().items()})

    meta = {"torch": torch.__version__, "tau": TAU, "num_students": len(students), "channels": CHANNELS,
            "input_size": SIZE, "num_classes": CLASSES, "cnet_arch": CNET_ARCH}
    meta.update({f"adam.{k}": repr(v) for k, v in ADAM.items()})
    for k, hp in enumerate(STUDENTS):
        meta.update({f"student{k}.{f}": (int(v) if isinstance(v, bool) else repr(v) if isinstance(v, float) else v)
                     for f, v in hp.items()})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "meta_step.safetensors")
    safetensors_io.save(path, out, meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes): L {losses.tolist()} M {meta_losses.tolist()}")


if __name__ == "__main__":
    main()
