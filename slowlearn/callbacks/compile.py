"""CompileCB: the model compiled by `torch.compile` for the fit, in place; the training loader brought to one batch
size so that one graph serves every step; every graph counted, and a recompile storm a warning naming its cause."""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..arguments import check_range
from ..callback import Callback
from ..device import model_device

__all__ = ["CompileCB", "CompiledGraph", "CountingBackend"]

CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs


@dataclass(frozen=True)
class CompiledGraph:
    """One graph that torch.compile traced and handed to the backend: `reason` is why dynamo compiled again (the
    first guard of the graphs it had that failed, e.g. "tensor 'x' size mismatch at index 0"), None for the first
    graph of the model (or of a graph break's continuation); `shapes` are its tensor inputs' shapes (parameters
    included); `grad` whether it was traced for training (grad mode on)."""
    reason: str | None
    shapes: tuple[tuple[int, ...], ...]
    grad: bool


class CountingBackend:
    """A torch.compile backend that notes every graph it gets (`graphs`, `CompiledGraph`s), then compiles it with
    the backend that `torch.compile(backend=backend, mode=mode, options=options, dynamic=dynamic)` would use."""

    def __init__(self, backend="inductor", mode: str | None = None, options: dict | None = None,
                 dynamic: bool | None = None):
        if mode is not None and options is not None:
            raise ValueError("CompileCB: give mode or options, not both (torch.compile takes one or the other)")
        # what torch.compile builds from these arguments; building it here checks them before any fit
        if backend == "inductor":
            self.inner = torch._TorchCompileInductorWrapper(mode, options, dynamic)
        else:
            self.inner = torch._TorchCompileWrapper(backend, mode, options, dynamic)
        self.compiler_name, self.dynamic = self.inner.compiler_name, dynamic  # what dynamo reads off a backend
        self.graphs: list[CompiledGraph] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Sequence):
        first = not self.graphs
        shapes = tuple(tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor))
        self.graphs.append(CompiledGraph(_recompile_reason(first), shapes, torch.is_grad_enabled()))
        return self.inner(gm, example_inputs)

    def get_compiler_config(self):
        """The inner backend's configuration (inductor's), which torch reads off compiled functions."""
        get = getattr(self.inner, "get_compiler_config", None)
        return get() if get is not None else None

    def reset(self) -> None:
        """Called by `torch._dynamo.reset()`: the inner backend drops its caches too."""
        self.inner.reset()


def _recompile_reason(first: bool) -> str | None:
    """Why dynamo compiles now: the failed guard it reports for the compile in progress (None on the first compile
    of a frame), read from its metrics context. Those are torch internals: where they differ, any graph after the
    first one counts as a recompile of unknown cause."""
    unknown = None if first else "unknown (run with TORCH_LOGS=recompiles to see the guard that failed)"
    try:
        from torch._dynamo.utils import get_metrics_context
        context = get_metrics_context()
        return context._metrics.get("recompile_reason") if context.in_progress() else unknown
    except (ImportError, AttributeError):  # another torch version: counted without the reason
        return unknown


def check_compile_supported() -> None:
    """torch.compile runs on this Python and platform (else a RuntimeError saying what to do)."""
    from torch._dynamo.eval_frame import check_if_dynamo_supported
    try:
        check_if_dynamo_supported()
    except RuntimeError as e:
        raise RuntimeError(f"CompileCB: torch.compile does not run here ({e}). Train without CompileCB (the model "
                           f"runs eagerly, as by default), or in a Python that torch {torch.__version__} compiles "
                           f"for.") from None


def check_cpu_compiler() -> None:
    """Inductor builds CPU kernels with a C++ compiler: one is there (else a RuntimeError saying what to do)."""
    from torch._inductor import cpp_builder, exc
    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler as e:
        raise RuntimeError(f"CompileCB: inductor compiles a model on the CPU into C++, and no C++ compiler was found "
                           f"({str(e).strip().splitlines()[0]}). Install one (apt-get install g++, or set CXX to its "
                           f"path), or compile without C++: CompileCB(backend='aot_eager').") from None


def compiled_module(model: nn.Module) -> nn.Module:
    """The module to compile in place: the user's model, inside a DistributedDataParallel wrapper if any. A model
    that `torch.compile(model)` wrapped already is refused (it would be compiled twice, nested)."""
    while isinstance(model, DistributedDataParallel):
        model = model.module
    if isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        raise TypeError("CompileCB got a model that torch.compile(model) has compiled already: give the Learner the "
                         "plain model (CompileCB compiles it in place, with the options given to CompileCB), or drop "
                         "CompileCB and keep your own torch.compile.")
    return model


def one_batch_size(dl) -> None:
    """Make the training loader drop its last, short batch, so that every training step has the same shapes and
    one graph serves them all (else the short batch compiles a second, shape-generic graph). slowlearn's loaders
    get `drop_last=True` (they read it at each epoch, and keep it after the fit, so that checkpoints saved after it
    resume with the same batches), said in a warning; a torch DataLoader cannot change it, which gets a warning
    saying how to build it. Nothing changes when the last batch is full, or when the whole set is one short batch."""
    if getattr(dl, "drop_last", True):
        return
    if hasattr(dl, "n_items") and isinstance(getattr(dl, "bs", None), int):  # TensorLoader, FileLoader
        n, bs = dl.n_items, dl.bs
    elif isinstance(getattr(dl, "batch_size", None), int) and hasattr(getattr(dl, "sampler", None), "__len__"):
        n, bs = len(dl.sampler), dl.batch_size
    else:
        return  # a loader of unknown length: a short last batch, if any, recompiles once (counted)
    short = n % bs
    if not short or n < bs:
        return
    if hasattr(dl, "n_items"):
        dl.drop_last = True
        warnings.warn(f"CompileCB: the training loader now drops the last {short} item{'s' * (short > 1)} of each "
                      f"epoch (drop_last=True, kept after this fit), so that every training step has the same "
                      f"batch size and one compiled graph serves them all; a shuffling loader still shows every "
                      f"item over the epochs. Create the loader with drop_last=True to silence this, or pass "
                      f"CompileCB(dynamic=True) to keep the short batch in a shape-generic graph.", stacklevel=2)
    else:
        warnings.warn(f"CompileCB: the training loader (a {type(dl).__name__}) ends each epoch with a short batch of "
                      f"{short} item{'s' * (short > 1)}, for which torch.compile compiles a second, shape-generic "
                      f"training graph, and drop_last cannot be changed on it: create it with drop_last=True.",
                      stacklevel=2)


def storm_advice(graphs: Sequence[CompiledGraph]) -> str:
    """What made these graphs recompile, most frequent first, and what to do about it."""
    reasons = Counter(g.reason.splitlines()[0][:200] for g in graphs if g.reason)
    told = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(3))
    shapes = any("size" in reason or "stride" in reason for reason in reasons) or any(
        a.grad == b.grad and a.shapes != b.shapes for a, b in pairwise(graphs))
    if shapes:
        fix = ("the inputs' shapes change between batches (batch sizes, image sizes, sequence lengths): give every "
               "batch one shape (drop_last=True, one image size, padding to a few lengths), or compile shape-generic "
               "graphs with CompileCB(dynamic=True)")
    else:
        fix = ("something other than the inputs' shapes changes between steps (a Python number or attribute that the "
               "model reads, hooks added or removed, the grad or autocast mode): make such values tensors or "
               "constants, or run with TORCH_LOGS=recompiles to see each guard that failed")
    return f"Dynamo's reasons: {told or 'not reported'}. Most likely {fix}."


class CompileCB(Callback):
    """Trains the model compiled by `torch.compile` (opt-in: it costs seconds to minutes of compiling, and whether
    its steps then run faster depends on the model, the machine and the torch version: measure with
    `benchmarks/compile.py` before making it a habit).

    The options go to torch.compile: `backend` ("inductor", "eager", "aot_eager", or a backend function), `mode`
    ("default", "reduce-overhead", "max-autotune", ...) or `options`, `dynamic`, `fullgraph`, and any other keyword
    (`compile_kwargs`). The model is compiled in place (`nn.Module.compile`) at `before_fit`, inside a
    DistributedDataParallel wrapper whether DistributedCB or the user put it there, so its `state_dict` keys stay
    those of the plain model (no `_orig_mod.` prefix): checkpoints and exports load without CompileCB. After the fit
    the model runs eagerly again (predictions, summaries and exports compile nothing); the next fit reuses the graphs
    compiled so far.

    Graphs: one for training, one for validation (no grad). So that one training graph serves every step, the
    training loader drops its last short batch (`drop_last=True`, with a warning when this changes it; not with
    `dynamic=True`). Validation batches are marked dynamic in the batch dimension (with `dynamic=None`), so one
    shape-generic graph serves them all, the short last one included; a last batch of 1 item gets a graph of its
    own (torch specialises sizes 0 and 1); with `dynamic=False` every batch size gets one. Under CUDA-graph modes ("reduce-overhead", "max-autotune") every batch
    starts a new CUDA-graph step (`torch.compiler.cudagraph_mark_step_begin`).

    Every graph handed to the backend is counted: `compiles` (all fits of this callback, `lr_find`'s included),
    `recompiles` (those compiled because the guards of the earlier ones failed: validation's graph is one, and
    unfreezing layers makes another, as do ActivationStatsCB's new hooks at each fit), `graphs` (`CompiledGraph`s, with dynamo's reason). More than `max_recompiles`
    recompiles in one fit is a storm: each costs a compile, and after `torch._dynamo.config.recompile_limit` (8)
    dynamo runs the model eagerly; a warning then says what made it recompile and what to do.

    It takes part in `lr_find` (whose graphs the fit reuses) and in mid-epoch resumes, exactly: compiling changes
    how the maths is run, not which. A torch.compile that cannot run here (an unsupported Python) or a model
    compiled already by `torch.compile(model)` is refused with an error saying what to do.
    """

    order = -9  # after DistributedCB (-20: the DDP wrapper, the loaders' shards) and DeviceCB (-10: moved batches)
    sweep = True

    def __init__(self, backend="inductor", mode: str | None = None, options: dict | None = None,
                 dynamic: bool | None = None, fullgraph: bool = False, max_recompiles: int = 4, **compile_kwargs):
        check_compile_supported()
        check_range("max_recompiles", max_recompiles, 0, integer=True, owner="CompileCB")
        self.backend = CountingBackend(backend, mode, options, dynamic)  # one for every fit: its graphs are reused
        self.dynamic, self.fullgraph, self.max_recompiles = dynamic, fullgraph, max_recompiles
        # its own graphs, counted against its own recompile_limit: not those of other models compiled in this process
        self.compile_kwargs = {"isolate_recompiles": True, **compile_kwargs}
        self.cudagraphs = mode in CUDAGRAPH_MODES or bool((options or {}).get("triton.cudagraphs"))
        self._module: nn.Module | None = None
        self._made: list = []  # [module, its compiled call]: filled in place, so that lr_find's restore keeps it
        self._fit_start, self._warned = 0, False

    @property
    def graphs(self) -> list[CompiledGraph]:
        """Every graph compiled during this callback's fits, in order."""
        return list(self.backend.graphs)

    @property
    def compiles(self) -> int:
        """Graphs compiled during this callback's fits."""
        return len(self.backend.graphs)

    @property
    def recompiles(self) -> int:
        """Graphs compiled because the guards of those compiled before failed (see `CompiledGraph.reason`)."""
        return sum(g.reason is not None for g in self.backend.graphs)

    def before_fit(self, learn) -> None:
        module = compiled_module(learn.model)
        if self.backend.compiler_name == "inductor" and model_device(module).type == "cpu":
            check_cpu_compiler()
        self._module, self._previous = module, module._compiled_call_impl  # torch's slot for the in-place compile
        module._compiled_call_impl = self._compiled_call(module)
        self._fit_start, self._warned = len(self.backend.graphs), False
        if self.dynamic is not True:
            one_batch_size(learn.dls.train)

    def _compiled_call(self, module: nn.Module):
        """`module`'s call compiled by this callback: made at its first fit, then reused with its graphs."""
        if not self._made or self._made[0] is not module:
            module.compile(backend=self.backend, dynamic=self.dynamic, fullgraph=self.fullgraph, **self.compile_kwargs)
            self._made[:] = [module, module._compiled_call_impl]
        return self._made[1]

    def before_batch(self, learn) -> None:
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        x = learn.batch[0] if isinstance(learn.batch, (tuple, list)) and learn.batch else None
        if not learn.training and self.dynamic is None and isinstance(x, torch.Tensor) and x.ndim:
            torch._dynamo.maybe_mark_dynamic(x, 0)

    def after_batch(self, learn) -> None:
        if self._warned or len(self.backend.graphs) - self._fit_start <= self.max_recompiles:  # no storm: no work
            return
        graphs = self.backend.graphs[self._fit_start:]
        recompiles = sum(g.reason is not None for g in graphs)
        if recompiles > self.max_recompiles:
            self._warned = True
            limit = self.compile_kwargs.get("recompile_limit") or torch._dynamo.config.recompile_limit
            warnings.warn(f"CompileCB: the model was recompiled {recompiles} times in this fit (more than "
                          f"max_recompiles={self.max_recompiles}), and each recompile costs a compile; after {limit} "
                          f"dynamo gives up and runs it eagerly. {storm_advice(graphs)}", stacklevel=2)

    def cleanup_fit(self, learn) -> None:
        if self._module is not None:
            self._module._compiled_call_impl, self._module = self._previous, None  # eager again after the fit

