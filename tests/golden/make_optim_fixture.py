#!/usr/bin/python3
"""Writes tests/golden/optim_torch.safetensors: parameter trajectories of torch.optim.SGD,
Adam and AdamW, which tests/engine/test_optim.cpp replays and compares (float64 to 1e-12).

Each case has two parameters (shapes [3] and [2, 2]) stepped STEPS times with fixed random
gradients; the second parameter has no gradient at step index SKIPPED_STEP, so the per-parameter
first-step and step-count rules are exercised. Keys per case (C = case name, j = 0, 1):
  C.hparams   F64  sgd: [lr, momentum, dampening, weight_decay, nesterov]
                   adam, adamw: [lr, beta1, beta2, eps, weight_decay]
  C.mask      F64  [STEPS, 2]  1 where parameter j has a gradient at that step
  C.pj.init   the parameter before the first step
  C.pj.grads  [STEPS, ...] the gradient given at each step
  C.pj.after  [STEPS, ...] the parameter after each step
Parameter tensors are F64, or F32 for cases ending in _f32. Metadata "C.kind" is sgd, adam or
adamw. Schedules (base lr 0.1): schedule.NAME  F64 [steps], the lr at steps 0, 1, ... of
CosineAnnealingLR, CosineAnnealingWarmRestarts and StepLR as configured in SCHEDULES.
Regenerate with: /usr/bin/python3 tests/golden/make_optim_fixture.py (needs torch).
"""
import os
import sys

import torch

import safetensors_io  # the format written by hand (this folder); no package in Debian

STEPS = 5
SKIPPED_STEP = 2
SHAPES = [(3,), (2, 2)]

CASES = [
    ("sgd_plain", "sgd", torch.float64, dict(lr=0.1)),
    ("sgd_momentum", "sgd", torch.float64, dict(lr=0.05, momentum=0.9)),
    ("sgd_dampening_wd", "sgd", torch.float64,
     dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("sgd_nesterov_wd", "sgd", torch.float64,
     dict(lr=0.07, momentum=0.85, weight_decay=1e-3, nesterov=True)),
    ("adam", "adam", torch.float64, dict(lr=1e-2)),
    ("adam_wd", "adam", torch.float64,
     dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ("adamw", "adamw", torch.float64, dict(lr=1e-2)),
    ("adamw_custom", "adamw", torch.float64,
     dict(lr=5e-3, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.2)),
    ("sgd_nesterov_f32", "sgd", torch.float32,
     dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True)),
    ("adam_wd_f32", "adam", torch.float32, dict(lr=1e-2, weight_decay=1e-2)),
]


def hparams(kind, o):
    if kind == "sgd":
        return [o["lr"], o.get("momentum", 0.0), o.get("dampening", 0.0),
                o.get("weight_decay", 0.0), 1.0 if o.get("nesterov", False) else 0.0]
    betas = o.get("betas", (0.9, 0.999))
    default_wd = 1e-2 if kind == "adamw" else 0.0
    return [o["lr"], betas[0], betas[1], o.get("eps", 1e-8), o.get("weight_decay", default_wd)]


def make_optimizer(kind, params, o):
    if kind == "sgd":
        return torch.optim.SGD(params, foreach=False, **o)
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(params, foreach=False, **o)


def run_case(name, kind, dtype, options, gen, out):
    params = [(torch.rand(s, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)
              for s in SHAPES]
    grads = [torch.randn((STEPS,) + s, generator=gen, dtype=torch.float64).to(dtype)
             for s in SHAPES]
    mask = torch.ones(STEPS, len(SHAPES), dtype=torch.float64)
    mask[SKIPPED_STEP, 1] = 0
    out[f"{name}.hparams"] = torch.tensor(hparams(kind, options), dtype=torch.float64)
    out[f"{name}.mask"] = mask
    for j, p in enumerate(params):
        out[f"{name}.p{j}.init"] = p.clone()
        out[f"{name}.p{j}.grads"] = grads[j]
    leaves = [p.clone().requires_grad_(True) for p in params]
    opt = make_optimizer(kind, leaves, options)
    after = [torch.empty((STEPS,) + s, dtype=dtype) for s in SHAPES]
    for t in range(STEPS):
        for j, p in enumerate(leaves):
            p.grad = grads[j][t].clone() if mask[t, j] == 1 else None
        opt.step()
        for j, p in enumerate(leaves):
            after[j][t] = p.detach()
    for j in range(len(SHAPES)):
        out[f"{name}.p{j}.after"] = after[j]


def schedule_values(make, steps):
    """The learning rate PyTorch uses at steps 0 .. steps-1 (scheduler stepped after each)."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return torch.tensor(values, dtype=torch.float64)


SCHEDULES = [
    ("schedule.cosine", 25,
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001)),
    ("schedule.warm_restarts", 30,
     lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2,
                                                                    eta_min=0.01)),
    ("schedule.warm_restarts_t1", 23,
     lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=1)),
    ("schedule.step", 20, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)),
]


def main():
    gen = torch.Generator().manual_seed(20240611)
    tensors, metadata = {}, {}
    for name, kind, dtype, options in CASES:
        run_case(name, kind, dtype, options, gen, tensors)
        metadata[f"{name}.kind"] = kind
    for key, steps, make in SCHEDULES:
        tensors[key] = schedule_values(make, steps)
    metadata["torch_version"] = torch.__version__
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim_torch.safetensors")
    try:
        from safetensors.torch import save_file
        metadata["writer"] = "safetensors.torch.save_file"
        save_file(tensors, path, metadata=metadata)
    except ImportError:
        metadata["writer"] = "safetensors_io.save"
        safetensors_io.save(path, tensors, metadata)
    print(f"wrote {path}: {len(CASES)} cases, {len(tensors)} tensors, "
          f"writer {metadata['writer']}", file=sys.stderr)


if __name__ == "__main__":
    main()
