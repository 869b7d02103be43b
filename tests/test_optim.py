import copy
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import make_dls
from torch import nn
from torch.optim import lr_scheduler

from slowlearn.optim import SGD, AdaDelta, AdaGrad, Adam, AdamW, MomentumSGD, RMSProp
from slowlearn.train import compare_optimizers


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 3))


BATCH = (torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
         torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1)))


def param_groups(model, lr, wd, two_groups):
    if not two_groups:
        return model.parameters()
    convs = [p for n, p in model.named_parameters() if not n.startswith("5.")]
    return [{"params": convs}, {"params": model[5].parameters(), "lr": lr * 0.5, "weight_decay": wd * 2}]


def train_steps(model, opt, n, start=0, sched=None):
    for i in range(start, n):
        x, y = BATCH
        loss = F.cross_entropy(model(x + 0.01 * i), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()
    return model


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def assert_same_trajectory(make_ours, make_ref, n=100):
    torch.manual_seed(0)
    model = small_cnn()
    ours, ref = copy.deepcopy(model), copy.deepcopy(model)
    train_steps(ours, make_ours(ours), n)
    train_steps(ref, make_ref(ref), n)
    a, b = flat(ours), flat(ref)
    assert not torch.equal(a, flat(model)), "the optimizer did not move the weights"
    assert ((a - b).norm() / b.norm()).item() <= 1e-5


def grid(seed):
    rng = random.Random(seed)
    return dict(lr=rng.choice([1e-3, 1e-2, 5e-2]), wd=rng.choice([0., 1e-2]), mom=rng.choice([0.5, 0.9]),
                two_groups=rng.choice([False, True]), beta2=rng.choice([0.99, 0.999]))


def torch_pair(name, h):
    """(our optimizer, torch.optim's equivalent) for the hyper-parameters h."""
    lr, wd, mom, tg = h["lr"], h["wd"], h["mom"], h["two_groups"]
    pg = lambda m: param_groups(m, lr, wd, tg)
    return {
        "SGD": (lambda m: SGD(pg(m), lr, wd=wd), lambda m: torch.optim.SGD(pg(m), lr, weight_decay=wd)),
        "MomentumSGD": (lambda m: MomentumSGD(pg(m), lr, mom=mom, wd=wd, dampening=0.),
                        lambda m: torch.optim.SGD(pg(m), lr, momentum=mom, weight_decay=wd)),
        "Nesterov": (lambda m: MomentumSGD(pg(m), lr, mom=mom, wd=wd, dampening=0., nesterov=True),
                     lambda m: torch.optim.SGD(pg(m), lr, momentum=mom, weight_decay=wd, nesterov=True)),
        "RMSProp": (lambda m: RMSProp(pg(m), lr / 10, wd=wd), lambda m: torch.optim.RMSprop(pg(m), lr / 10,
                                                                                            weight_decay=wd)),
        "RMSProp+momentum": (lambda m: RMSProp(pg(m), lr / 10, wd=wd, momentum=mom),
                             lambda m: torch.optim.RMSprop(pg(m), lr / 10, weight_decay=wd, momentum=mom)),
        "AdaGrad": (lambda m: AdaGrad(pg(m), lr, wd=wd, initial_accumulator_value=0.1),
                    lambda m: torch.optim.Adagrad(pg(m), lr, weight_decay=wd, initial_accumulator_value=0.1)),
        "AdaDelta": (lambda m: AdaDelta(pg(m), lr * 10, wd=wd), lambda m: torch.optim.Adadelta(pg(m), lr * 10,
                                                                                              weight_decay=wd)),
        "Adam": (lambda m: Adam(pg(m), lr, betas=(mom, h["beta2"]), wd=wd),
                 lambda m: torch.optim.Adam(pg(m), lr, betas=(mom, h["beta2"]), weight_decay=wd)),
        "AdamW": (lambda m: AdamW(pg(m), lr, betas=(mom, h["beta2"]), wd=wd),
                  lambda m: torch.optim.AdamW(pg(m), lr, betas=(mom, h["beta2"]), weight_decay=wd)),
    }[name]


NAMES = ["SGD", "MomentumSGD", "Nesterov", "RMSProp", "RMSProp+momentum", "AdaGrad", "AdaDelta", "Adam", "AdamW"]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", NAMES)
def test_matches_torch_optim(name, seed):
    assert_same_trajectory(*torch_pair(name, grid(seed)))


@pytest.mark.parametrize("name", NAMES)
def test_complex_parameters_follow_torch_optim(name):
    """torch.optim treats a complex number as a pair of real ones (its squares are |g|^2, not g^2)."""
    ours, theirs = torch_pair(name, dict(lr=1e-2, wd=1e-2, mom=0.9, two_groups=False, beta2=0.999))
    start = torch.randn(4, 3, dtype=torch.cfloat, generator=torch.Generator().manual_seed(0))
    ends = []
    for make in (ours, theirs):
        weights = nn.ParameterList([start.clone()])
        opt = make(weights)
        for i in range(20):
            x = torch.randn(8, 4, dtype=torch.cfloat, generator=torch.Generator().manual_seed(i))
            (x @ weights[0]).abs().sum().backward()
            opt.step()
            opt.zero_grad()
        ends.append(weights[0].detach())
    assert not torch.equal(ends[1], start)
    assert ((ends[0] - ends[1]).norm() / ends[1].norm()).item() <= 1e-5


class Reference(torch.optim.Optimizer):
    """A straightforward per-parameter implementation of the seeds' variants, as in the seed notebooks."""

    def __init__(self, params, rule, **hp):
        super().__init__(params, hp)
        self.rule = rule

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.rule(p, p.grad, self.state[p], group)


def seed_momentum(p, g, state, h):
    avg = state.get("avg", torch.zeros_like(p))
    state["avg"] = avg * h["mom"] + g * (1 - h["mom"])
    p -= h["lr"] * state["avg"]


def seed_rmsprop(p, g, state, h):
    sqr = state.get("sqr_avg", g ** 2)
    state["sqr_avg"] = sqr * h["sqr_mom"] + g ** 2 * (1 - h["sqr_mom"])
    p -= h["lr"] * g / (state["sqr_avg"].sqrt() + h["eps"])


def seed_adam(p, g, state, h):
    i = state["i"] = state.get("i", 0) + 1
    state["avg"] = h["beta1"] * state.get("avg", torch.zeros_like(p)) + (1 - h["beta1"]) * g
    state["sqr"] = h["beta2"] * state.get("sqr", torch.zeros_like(p)) + (1 - h["beta2"]) * g ** 2
    unbias_avg, unbias_sqr = state["avg"] / (1 - h["beta1"] ** i), state["sqr"] / (1 - h["beta2"] ** i)
    p -= h["lr"] * unbias_avg / (unbias_sqr + h["eps"]).sqrt()


def test_seed_exponential_average_momentum():
    assert_same_trajectory(lambda m: MomentumSGD(m.parameters(), 0.5, mom=0.9),
                           lambda m: Reference(m.parameters(), seed_momentum, lr=0.5, mom=0.9))


def test_other_dampenings_differ_from_torch_as_the_docstring_says():
    ours, theirs = nn.Parameter(torch.zeros(1, dtype=torch.float64)), nn.Parameter(torch.zeros(1, dtype=torch.float64))
    mom, d, lr = 0.9, 0.5, 0.1
    opts = MomentumSGD([ours], lr, mom=mom, dampening=d), torch.optim.SGD([theirs], lr, momentum=mom, dampening=d)
    for t in range(1, 201):
        ours.grad, theirs.grad = torch.ones_like(ours), torch.ones_like(theirs)  # g_1 = 1
        [opt.step() for opt in opts]
        bufs = [opt.state[p]["momentum_buffer"] for opt, p in zip(opts, (ours, theirs))]
        assert (bufs[1] - bufs[0]).item() == pytest.approx(d * mom ** (t - 1))
    assert (ours - theirs).item() == pytest.approx(lr * d / (1 - mom))


def test_seed_rmsprop_starts_at_first_squared_gradient():
    assert_same_trajectory(lambda m: RMSProp(m.parameters(), 1e-2, alpha=0.99, eps=1e-5, v_init="grad"),
                           lambda m: Reference(m.parameters(), seed_rmsprop, lr=1e-2, sqr_mom=0.99, eps=1e-5))


def test_seed_adam_eps_inside_sqrt():
    assert_same_trajectory(lambda m: Adam(m.parameters(), 1e-2, betas=(0.9, 0.99), eps=1e-5, eps_inside_sqrt=True),
                           lambda m: Reference(m.parameters(), seed_adam, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-5))


def all_optimizers(params):
    return [SGD(params(), 0.1, wd=1e-2), MomentumSGD(params(), 0.1), MomentumSGD(params(), 0.1, nesterov=True),
            RMSProp(params(), 1e-3, momentum=0.5), AdaGrad(params(), 1e-2), AdaDelta(params()), Adam(params(), 1e-3),
            AdamW(params(), 1e-3)]


@pytest.mark.parametrize("index", range(8))
def test_state_dict_round_trip_continues_identically(index):
    torch.manual_seed(0)
    model = small_cnn()
    straight, resumed = copy.deepcopy(model), copy.deepcopy(model)
    opt = all_optimizers(straight.parameters)[index]
    train_steps(straight, opt, 100)

    first = all_optimizers(resumed.parameters)[index]
    train_steps(resumed, first, 50)
    saved = copy.deepcopy(first.state_dict())
    second = all_optimizers(resumed.parameters)[index]
    second.load_state_dict(saved)
    train_steps(resumed, second, 100, start=50)
    assert torch.equal(flat(straight), flat(resumed))


@pytest.mark.parametrize("ours, theirs, missing", [
    (lambda p: Adam(p, 1e-2), lambda p: torch.optim.Adam(p, 1e-2), "eps_inside_sqrt"),
    (lambda p: RMSProp(p, 1e-2), lambda p: torch.optim.RMSprop(p, 1e-2), "v_init, eps_inside_sqrt"),
])
def test_the_state_of_another_optimizer_is_refused_before_anything_is_loaded(ours, theirs, missing):
    param = nn.Parameter(torch.zeros(3))
    other = theirs([param])
    param.grad = torch.ones(3)
    other.step()
    opt = ours([param])
    with pytest.raises(ValueError, match=f"lack {missing}, which {type(opt).__name__} needs: .*Nothing was loaded"):
        opt.load_state_dict(other.state_dict())
    assert not opt.state and "amsgrad" not in opt.param_groups[0]
    opt.step()


def test_a_sparse_gradient_is_refused_before_any_group_steps():
    dense, embedding = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4, 2))
    opt = Adam([{"params": [dense]}, {"params": [embedding]}], 0.1)
    dense.grad, embedding.grad = torch.ones(3), torch.ones(4, 2).to_sparse()
    with pytest.raises(RuntimeError, match="Adam does not support sparse gradients"):
        opt.step()
    assert torch.equal(dense, torch.zeros(3)) and not opt.state


def test_parameters_without_gradient_are_skipped_and_zero_grad_sets_none():
    model = small_cnn()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.clone()
    opt = Adam(model.parameters(), 1e-2)
    train_steps(model, opt, 3)
    assert torch.equal(model[0].weight, frozen) and model[0].weight not in opt.state
    F.cross_entropy(model(BATCH[0]), BATCH[1]).backward()
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("make, match", [
    (lambda p: SGD(p, lr=-1.), "Invalid lr: -1.0"),
    (lambda p: MomentumSGD(p, 0.1, mom=1.), "Invalid momentum: 1.0"),
    (lambda p: Adam(p, betas=(0.9, 1.2)), "Invalid beta2: 1.2"),
    (lambda p: Adam(p, betas=(-0.1, 0.9)), "Invalid beta1: -0.1"),
    (lambda p: RMSProp(p, eps=0.), "Invalid eps: 0.0"),
    (lambda p: AdaDelta(p, eps=-1e-3), "Invalid eps: -0.001"),
    (lambda p: AdamW(p, wd=-1.), "Invalid weight_decay: -1.0"),
    (lambda p: RMSProp(p, v_init="ones"), "Invalid v_init: 'ones'"),
    (lambda p: SGD([{"params": p, "lr": -0.5}], 0.1), "Invalid lr: -0.5"),
    (lambda p: SGD(p, lr=float("nan")), r"Invalid lr: nan \(must be a finite number in \[0.0, inf\)\)"),
    (lambda p: Adam(p, lr=float("inf")), "Invalid lr: inf"),
    (lambda p: Adam(p, betas=(float("nan"), 0.9)), "Invalid beta1: nan"),
    (lambda p: AdamW(p, wd=float("nan")), "Invalid weight_decay: nan"),
    (lambda p: RMSProp(p, eps=float("inf")), "Invalid eps: inf"),
    (lambda p: MomentumSGD(p, 0.1, mom=float("nan")), "Invalid momentum: nan"),
    (lambda p: MomentumSGD(p, 0.1, dampening=1.5),
     r"Invalid dampening: 1.5 \(must be a finite number in \[0.0, 1.0\]\)"),
    (lambda p: Adam(p, betas=(0.9,)), r"Invalid betas: \(0.9,\) \(must be two numbers \(beta1, beta2\)"),
    (lambda p: AdamW([{"params": p, "betas": (0.9, 0.99, 0.5)}]), r"Invalid betas: \(0.9, 0.99, 0.5\)"),
    (lambda p: RMSProp([{"params": p, "v_init": "ones"}]), "Invalid v_init: 'ones'"),
    (lambda p: AdaGrad([{"params": p, "initial_accumulator_value": -1.}]), "Invalid initial_accumulator_value: -1.0"),
])
def test_invalid_hyperparameters_name_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make(small_cnn().parameters())


def test_a_param_group_refused_by_add_param_group_is_not_kept():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))
    opt = Adam([a], 0.1)
    with pytest.raises(ValueError, match="Invalid lr: -1.0"):
        opt.add_param_group({"params": [b], "lr": -1.})
    assert len(opt.param_groups) == 1
    a.grad, b.grad = torch.ones(3), torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.zeros(3))


def record_schedule(opt, sched, n):
    model = opt.param_groups[0]["params"][0]
    key = "betas" if "betas" in opt.defaults else "momentum"
    seen = []
    for _ in range(n):
        group = opt.param_groups[0]
        seen.append((group["lr"], group[key][0] if key == "betas" else group[key]))
        model.grad = torch.ones_like(model)
        opt.step()
        sched.step()
    return seen


@pytest.mark.parametrize("ours, theirs", [
    (lambda p: MomentumSGD(p, 0.1, mom=0.9), lambda p: torch.optim.SGD(p, 0.1, momentum=0.9)),
    (lambda p: Adam(p, 1e-3), lambda p: torch.optim.Adam(p, 1e-3)),
])
@pytest.mark.parametrize("make_sched, cycles_momentum", [
    (lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=50, cycle_momentum=True), True),
    (lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=50), False),
])
def test_torch_schedulers_drive_lr_and_momentum(ours, theirs, make_sched, cycles_momentum):
    mine_opt, torch_opt = ours([nn.Parameter(torch.zeros(3))]), theirs([nn.Parameter(torch.zeros(3))])
    mine, reference = (record_schedule(o, make_sched(o), 50) for o in (mine_opt, torch_opt))
    assert [v for pair in mine for v in pair] == pytest.approx([v for pair in reference for v in pair])
    assert len({lr for lr, _ in mine}) > 40 and (len({m for _, m in mine}) > 40) == cycles_momentum


def test_compare_optimizers_same_start_table_and_figure(capsys):
    torch.manual_seed(0)
    dls = make_dls(n_train=40, n_valid=10, bs=8)
    rows, fig = compare_optimizers(lambda: nn.Linear(3, 2), {"sgd": (SGD, 0.1), "sgd again": (SGD, 0.1),
                                                            "momentum": (MomentumSGD, 0.1), "adam": (Adam, 1e-2)},
                                   n_epochs=2, dls=dls)
    by_name = {r["optimizer"]: r for r in rows}
    # same initial weights and batch order: the same optimizer twice gives the same numbers
    assert by_name["sgd"]["valid_loss"] == by_name["sgd again"]["valid_loss"]
    assert by_name["sgd"]["valid_loss"] != by_name["adam"]["valid_loss"]
    assert [by_name[n]["state/param bytes"] for n in ("sgd", "momentum", "adam")] == [0, 1, 2]
    assert [ax.get_title() for ax in fig.axes] == ["Training loss", "Validation accuracy"]
    assert len(fig.axes[0].get_lines()) == 4
    assert "state/param bytes" in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda p: Adam(p, weight_decay=0.1), r"Adam\(weight_decay=...\): slowlearn's Adam calls it wd="),
    (lambda p: MomentumSGD(p, 0.1, momentum=0.9), r"MomentumSGD\(momentum=...\): .* MomentumSGD calls it mom="),
    (lambda p: AdamW(p, amsgrad=True), r"AdamW\(amsgrad=...\): that option is torch.optim's, which slowlearn's AdamW "),
])
def test_torch_optims_keywords_say_what_slowlearn_calls_them_or_that_it_lacks_them(make, message):
    """Python's own 'unexpected keyword argument' named neither slowlearn's name nor where the option is."""
    with pytest.raises(TypeError, match=message):
        make([nn.Parameter(torch.zeros(2))])
    assert RMSProp([nn.Parameter(torch.zeros(2))], momentum=0.9).defaults["momentum"] == 0.9  # its own name
