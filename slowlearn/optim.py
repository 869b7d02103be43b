"""From-scratch optimizers: the seeds' update rules as real `torch.optim.Optimizer`s.

State lives in `self.state` (so it reaches `state_dict()` and checkpoints), hyper-parameters in
`param_groups` under torch's names (`lr`, `momentum`, `betas`, `eps`, `weight_decay`), so every
`torch.optim.lr_scheduler` drives them, `OneCycleLR(cycle_momentum=True)` included. Each update is
vectorised over a group's parameters with `torch._foreach_*` ops; there is no per-parameter Python
loop (foreach ops fall back to per-tensor kernels by themselves when a list mixes devices or dtypes). As in
`torch.optim`, a complex parameter is updated as a pair of real ones (its state is real, with a last dimension of 2).

Notation below: g = gradient, p = parameter, γ = lr, λ = weight decay, t = step number (from 1).
"L2" weight decay adds λp to the gradient (torch's `weight_decay`); "decoupled" shrinks p by γλ.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .arguments import check_range

__all__ = ["SGD", "MomentumSGD", "RMSProp", "AdaGrad", "AdaDelta", "Adam", "AdamW"]


# torch.optim's keyword arguments that slowlearn's optimizers name otherwise, or do not have
TORCH_NAMES = {"weight_decay": "wd", "momentum": "mom"}
TORCH_ONLY = ("amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused", "decoupled_weight_decay")


class ForeachOptimizer(Optimizer):
    """Base of slowlearn's optimizers: validates hyper-parameters, gathers each group's parameters
    that have a gradient, creates their state, and hands the lists to `update`."""

    def __new__(cls, *args, **kwargs):
        _check_keywords(cls, kwargs)
        return super().__new__(cls)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        try:
            self.check_hyperparameters(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()  # refused: the optimizer stays as it was
            raise

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's, once the saved param groups are known to hold this optimizer's hyper-parameters: the state of
        another optimizer (torch.optim's Adam into this Adam, say) is refused before anything is loaded."""
        for group in state_dict["param_groups"]:
            missing = [key for key in self.defaults if key not in group]
            if missing:
                name = type(self).__name__
                raise ValueError(f"The param groups of this state dict lack {', '.join(missing)}, which {name} needs: "
                                 f"it is the state of another optimizer (torch.optim's {name}?). Nothing was loaded: "
                                 f"load it into an optimizer of the type that saved it.")
        super().load_state_dict(state_dict)

    def check_hyperparameters(self, group: dict) -> None:
        check_range("lr", group["lr"], 0.)
        check_range("weight_decay", group.get("weight_decay", 0.), 0.)
        if "momentum" in group:
            check_range("momentum", group["momentum"], 0., 1.)
        if "betas" in group:
            betas = group["betas"]
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise ValueError(f"Invalid betas: {betas!r} (must be two numbers (beta1, beta2), each in [0, 1))")
            for i, beta in enumerate(betas):
                check_range(f"beta{i + 1}", beta, 0., 1.)
        if "eps" in group:
            check_range("eps", group["eps"], 0., low_open=True)

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of a parameter before its first step (override)."""
        return {}

    def update(self, group: dict, params: list[Tensor], grads: list[Tensor], states: list[dict]) -> None:
        """Apply one step to `params` in place (override)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stepped = [(group, [p for p in group["params"] if p.grad is not None]) for group in self.param_groups]
        if any(p.grad.is_sparse for _, params in stepped for p in params):  # refused before any group steps
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        for group, params in stepped:
            if not params:
                continue
            grads, views = [p.grad for p in params], params
            if any(p.is_complex() for p in params):  # as torch.optim: a complex number is a pair of real ones
                views, grads = _real_views(params), _real_views(grads)
            states = []
            for p, view in zip(params, views):
                state = self.state[p]
                if not state:
                    state.update(self.init_state(view, group))
                states.append(state)
            self.update(group, views, grads, states)
        return loss


def _check_keywords(cls: type, kwargs: dict) -> None:
    """A keyword argument of torch.optim's that this optimizer names otherwise (weight_decay=: wd=) or lacks
    (amsgrad=, foreach=, ...) is a TypeError saying so, rather than Python's bare 'unexpected keyword'."""
    takes = inspect.signature(cls.__init__).parameters
    for key in kwargs:
        if key in takes or any(p.kind is p.VAR_KEYWORD for p in takes.values()):
            continue
        if TORCH_NAMES.get(key) in takes:
            raise TypeError(f"{cls.__name__}({key}=...): slowlearn's {cls.__name__} calls it {TORCH_NAMES[key]}= "
                            f"({key}= is torch.optim's name)")
        if key in TORCH_ONLY:
            raise TypeError(f"{cls.__name__}({key}=...): that option is torch.optim's, which slowlearn's "
                            f"{cls.__name__} does not have: use torch.optim's optimizer for it")


def _real_views(tensors: list[Tensor]) -> list[Tensor]:
    """Complex tensors viewed as real ones with a last dimension of 2 (real, imaginary); the others as they are."""
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


def _zeros(params: Tensor) -> Tensor:
    return torch.zeros_like(params, memory_format=torch.preserve_format)


def _l2(grads: list[Tensor], params: list[Tensor], wd: float) -> list[Tensor]:
    """g + λp, without touching p.grad."""
    return torch._foreach_add(grads, params, alpha=wd) if wd else grads


def _steps(states: list[dict]) -> list[int]:
    for s in states:
        s["step"] += 1
    return [s["step"] for s in states]


class SGD(ForeachOptimizer):
    r"""Stochastic gradient descent with weight decay.

    .. math::
        p_t = p_{t-1}(1 - \gamma\lambda) - \gamma g_t

    Shrinking the weights by γλ is the same as adding λp to the gradient (L2) for plain SGD, so this
    matches `torch.optim.SGD(lr, weight_decay=wd)`.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate γ (≥ 0).
        wd: weight decay λ (≥ 0), stored as `weight_decay` in the param groups.
    """

    def __init__(self, params: Iterable, lr: float, wd: float = 0.):
        super().__init__(params, dict(lr=lr, weight_decay=wd))

    def update(self, group, params, grads, states):
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        torch._foreach_add_(params, grads, alpha=-group["lr"])


class MomentumSGD(ForeachOptimizer):
    r"""SGD with momentum: the seed's exponential average or torch's heavy ball, and Nesterov.

    .. math::
        g_t &\leftarrow g_t + \lambda p_{t-1} \quad \text{(L2 weight decay)} \\
        b_t &= \mu b_{t-1} + (1 - d) g_t, \qquad b_0 = 0 \\
        p_t &= p_{t-1} - \gamma b_t \quad \text{or, with Nesterov,} \quad
        p_t = p_{t-1} - \gamma \big((1 - d) g_t + \mu b_t\big)

    The dampening d selects the form: `dampening=None` (the default) means d = μ, the seeds'
    exponential moving average `avg = mom*avg + (1-mom)*grad` (so lr can be large: 1.25 trains the
    seed CNN); `dampening=0.` is `torch.optim.SGD(momentum=mom)` exactly. With other values of d,
    `torch.optim.SGD(momentum=mom, dampening=d)` starts its buffer at g_1 undamped (b_1 = g_1, here
    (1 - d) g_1): the buffers then differ by d μ^(t-1) g_1, which fades, but the weights keep the offset
    of γ d g_1 / (1 - μ) that it adds up to.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate γ (≥ 0).
        mom: momentum μ in [0, 1), stored as `momentum` (schedulers cycle it).
        wd: L2 weight decay λ (≥ 0), stored as `weight_decay`.
        dampening: d in [0, 1], or None to follow μ (the seed's form).
        nesterov: use Nesterov momentum.
    """

    def __init__(self, params: Iterable, lr: float, mom: float = 0.9, wd: float = 0.,
                 dampening: float | None = None, nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=mom, weight_decay=wd, dampening=dampening, nesterov=nesterov))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        if group["dampening"] is not None:
            check_range("dampening", group["dampening"], 0., 1., high_open=False)

    def init_state(self, p, group):
        return {"momentum_buffer": _zeros(p)}

    def update(self, group, params, grads, states):
        mom, lr = group["momentum"], group["lr"]
        damp = mom if group["dampening"] is None else group["dampening"]
        grads = _l2(grads, params, group["weight_decay"])
        bufs = [s["momentum_buffer"] for s in states]
        torch._foreach_mul_(bufs, mom)
        torch._foreach_add_(bufs, grads, alpha=1 - damp)
        if group["nesterov"]:
            direction = torch._foreach_mul(grads, 1 - damp)
            torch._foreach_add_(direction, bufs, alpha=mom)
        else:
            direction = bufs
        torch._foreach_add_(params, direction, alpha=-lr)


class RMSProp(ForeachOptimizer):
    r"""RMSProp: divide the gradient by a running root mean square of recent gradients.

    .. math::
        g_t &\leftarrow g_t + \lambda p_{t-1} \\
        v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
        b_t &= \mu b_{t-1} + g_t / (\sqrt{v_t} + \epsilon) \quad \text{(no buffer when } \mu = 0) \\
        p_t &= p_{t-1} - \gamma b_t

    `v_init="zero"` (the default) starts at v_0 = 0 and matches `torch.optim.RMSprop`;
    `v_init="grad"` is the seed's variant, v_0 = g_1^2, which avoids the huge first steps of a
    near-zero average. `eps_inside_sqrt=True` uses sqrt(v_t + ε) instead of sqrt(v_t) + ε.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate γ (≥ 0).
        alpha: smoothing constant α of the squared average (the seed's `sqr_mom`), in [0, 1).
        eps: ε > 0.
        wd: L2 weight decay λ (≥ 0), stored as `weight_decay`.
        momentum: μ in [0, 1) (torch's RMSprop momentum; 0 turns it off).
        v_init: "zero" (torch) or "grad" (the seed).
        eps_inside_sqrt: where ε goes.
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, wd: float = 0.,
                 momentum: float = 0., v_init: str = "zero", eps_inside_sqrt: bool = False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=wd, momentum=momentum,
                                      v_init=v_init, eps_inside_sqrt=eps_inside_sqrt))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        check_range("alpha", group["alpha"], 0., 1.)
        if group["v_init"] not in ("zero", "grad"):
            raise ValueError(f"Invalid v_init: {group['v_init']!r} (must be 'zero' or 'grad')")

    def init_state(self, p, group):
        return {"step": 0, "square_avg": _zeros(p)}

    def update(self, group, params, grads, states):
        alpha, eps = group["alpha"], group["eps"]
        grads = _l2(grads, params, group["weight_decay"])
        if group["v_init"] == "grad":
            for s, g in zip(states, grads):
                if s["step"] == 0:
                    torch.mul(g, g, out=s["square_avg"])
        _steps(states)
        avgs = [s["square_avg"] for s in states]
        torch._foreach_mul_(avgs, alpha)
        torch._foreach_addcmul_(avgs, grads, grads, value=1 - alpha)
        denom = _sqrt_eps(avgs, eps, group["eps_inside_sqrt"])
        if group["momentum"]:
            for s, p in zip(states, params):
                if "momentum_buffer" not in s:  # created on demand: a scheduler may turn momentum on later
                    s["momentum_buffer"] = _zeros(p)
            bufs = [s["momentum_buffer"] for s in states]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_addcdiv_(bufs, grads, denom)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        else:
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])


def _sqrt_eps(avgs: list[Tensor], eps: float, inside: bool) -> list[Tensor]:
    """sqrt(v) + ε, or sqrt(v + ε)."""
    if inside:
        out = torch._foreach_add(avgs, eps)
        torch._foreach_sqrt_(out)
        return out
    out = torch._foreach_sqrt(avgs)
    torch._foreach_add_(out, eps)
    return out


class AdaGrad(ForeachOptimizer):
    r"""AdaGrad: per-parameter learning rates from the sum of all past squared gradients.

    .. math::
        g_t &\leftarrow g_t + \lambda p_{t-1} \\
        s_t &= s_{t-1} + g_t^2, \qquad s_0 = \text{initial\_accumulator\_value} \\
        p_t &= p_{t-1} - \gamma g_t / (\sqrt{s_t} + \epsilon)

    Matches `torch.optim.Adagrad` (with its `lr_decay=0`).

    Args:
        params: parameters or param-group dicts.
        lr: learning rate γ (≥ 0).
        eps: ε > 0.
        wd: L2 weight decay λ (≥ 0), stored as `weight_decay`.
        initial_accumulator_value: s_0 (≥ 0).
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, eps: float = 1e-10, wd: float = 0.,
                 initial_accumulator_value: float = 0.):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=wd,
                                      initial_accumulator_value=initial_accumulator_value))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        check_range("initial_accumulator_value", group["initial_accumulator_value"], 0.)

    def init_state(self, p, group):
        return {"step": 0, "sum": torch.full_like(p, group["initial_accumulator_value"],
                                                  memory_format=torch.preserve_format)}

    def update(self, group, params, grads, states):
        grads = _l2(grads, params, group["weight_decay"])
        _steps(states)
        sums = [s["sum"] for s in states]
        torch._foreach_addcmul_(sums, grads, grads, value=1)
        denom = _sqrt_eps(sums, group["eps"], inside=False)
        torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])


class AdaDelta(ForeachOptimizer):
    r"""AdaDelta: step sizes from the ratio of running RMS of past updates to running RMS of gradients.

    .. math::
        g_t &\leftarrow g_t + \lambda p_{t-1} \\
        v_t &= \rho v_{t-1} + (1 - \rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t \\
        u_t &= \rho u_{t-1} + (1 - \rho) \Delta_t^2 \\
        p_t &= p_{t-1} - \gamma \Delta_t

    Matches `torch.optim.Adadelta`.

    Args:
        params: parameters or param-group dicts.
        lr: scale γ of the update (≥ 0; 1.0 is the paper's method).
        rho: decay ρ of both running averages, in [0, 1).
        eps: ε > 0.
        wd: L2 weight decay λ (≥ 0), stored as `weight_decay`.
    """

    def __init__(self, params: Iterable, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, wd: float = 0.):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=wd))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        check_range("rho", group["rho"], 0., 1.)

    def init_state(self, p, group):
        return {"step": 0, "square_avg": _zeros(p), "acc_delta": _zeros(p)}

    def update(self, group, params, grads, states):
        rho, eps = group["rho"], group["eps"]
        grads = _l2(grads, params, group["weight_decay"])
        _steps(states)
        avgs, acc_deltas = [s["square_avg"] for s in states], [s["acc_delta"] for s in states]
        torch._foreach_mul_(avgs, rho)
        torch._foreach_addcmul_(avgs, grads, grads, value=1 - rho)
        std = _sqrt_eps(avgs, eps, inside=True)
        deltas = _sqrt_eps(acc_deltas, eps, inside=True)
        torch._foreach_div_(deltas, std)
        torch._foreach_mul_(deltas, grads)
        torch._foreach_mul_(acc_deltas, rho)
        torch._foreach_addcmul_(acc_deltas, deltas, deltas, value=1 - rho)
        torch._foreach_add_(params, deltas, alpha=-group["lr"])


class Adam(ForeachOptimizer):
    r"""Adam: momentum (first moment) over RMSProp (second moment), both bias-corrected.

    .. math::
        g_t &\leftarrow g_t + \lambda p_{t-1} \quad \text{(L2; AdamW decouples it)} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat v_t = v_t / (1 - \beta_2^t) \\
        p_t &= p_{t-1} - \gamma \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    Defaults and ε outside the square root match `torch.optim.Adam`. The seed's variant puts ε
    inside, sqrt(v̂_t + ε), with betas (0.9, 0.99) and ε = 1e-5: `eps_inside_sqrt=True`.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate γ (≥ 0).
        betas: (β1, β2), each in [0, 1); schedulers cycle β1 as the momentum.
        eps: ε > 0.
        wd: weight decay λ (≥ 0), stored as `weight_decay`.
        eps_inside_sqrt: where ε goes.
    """

    decoupled_wd = False

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, wd: float = 0., eps_inside_sqrt: bool = False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=wd,
                                      eps_inside_sqrt=eps_inside_sqrt))

    def init_state(self, p, group):
        return {"step": 0, "exp_avg": _zeros(p), "exp_avg_sq": _zeros(p)}

    def update(self, group, params, grads, states):
        (beta1, beta2), lr, wd = group["betas"], group["lr"], group["weight_decay"]
        if self.decoupled_wd:
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
        else:
            grads = _l2(grads, params, wd)
        steps = _steps(states)
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        step_sizes = [-lr / (1 - beta1 ** t) for t in steps]
        if group["eps_inside_sqrt"]:
            denom = torch._foreach_div(exp_avg_sqs, [1 - beta2 ** t for t in steps])
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_sqrt_(denom)
        else:
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, [(1 - beta2 ** t) ** 0.5 for t in steps])
            torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)


class AdamW(Adam):
    r"""Adam with decoupled weight decay: the weights shrink by γλ each step, outside the adaptive
    update (so decay is not divided by sqrt(v̂)).

    .. math::
        p_t = p_{t-1}(1 - \gamma\lambda) - \gamma \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    with m̂, v̂ as in `Adam` (no λp in the gradient). Matches `torch.optim.AdamW`; default λ = 0.01.

    Args: as `Adam`.
    """

    decoupled_wd = True

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, wd: float = 1e-2, eps_inside_sqrt: bool = False):
        super().__init__(params, lr, betas, eps, wd, eps_inside_sqrt)
