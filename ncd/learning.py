"""Losses and optimisers: each declared once, here, and read by every stage.

A training set-up (`train NAME { model: ...  loss: ...  optimiser: ... }`) names one loss and
one optimiser. Each is a declaration in this module: the elaborator reads its typing facts
(which targets a loss takes, which hyper-parameters an optimiser has, with the names and
defaults of `torch.optim`, and which state it keeps per parameter), the compiler copies its
Python function into the generated training step, and the tests hold each one to PyTorch's own
(`torch` names what it equals). Adding a loss or an optimiser is one declaration here.

The functions are written out (no `torch.optim` and no autograd at run time): a loss returns
its value and its gradient with respect to the model's output, an update changes a parameter
and its state arrays in place. They are Python source, not callables, because they are
copied into generated files; `tests/test_training.py` runs each against PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------

TargetKind = Literal["labels", "values"]
"""What a loss compares the output with: integer labels over a class axis (`N[n][b]` for an
output `R[b, n]`), or an array of the output's own type."""

Field = Literal["R", "B"]
"""Where a loss's model or an optimiser's parameters live: the reals, or the Booleans (Z2,
where a circuit of gates learns by flipping its Boolean parameters)."""


@dataclass(frozen=True)
class LossDeclaration:
    name: str
    summary: str
    targets: TargetKind
    class_axis: bool
    """Whether the loss names one target axis (`cross_entropy[n]`: the classes)."""
    torch: str
    """The PyTorch function it equals (with its default reduction, the mean)."""
    function: str
    """`def NAME_loss(output, target, dim)`: the mean loss and its gradient with respect to
    `output` (`dim`: the class axis's dim, counted from the end; unused without one)."""
    correct: str | None
    """`def NAME_correct(output, target, dim)`: how many predictions are right (for the
    accuracy `ncd train` prints); None when the loss has no notion of a right answer."""
    field: Field = "R"
    """The datatype of the model's input and output (and of the target)."""

    @property
    def loss_function(self) -> str:
        return f"{self.name}_loss"

    @property
    def correct_function(self) -> str | None:
        return None if self.correct is None else f"{self.name}_correct"


LOSSES: dict[str, LossDeclaration] = {}


def declare_loss(declaration: LossDeclaration) -> LossDeclaration:
    if declaration.name in LOSSES:
        raise ValueError(f"the loss {declaration.name!r} is declared twice")
    LOSSES[declaration.name] = declaration
    return declaration


declare_loss(LossDeclaration(
    name="mse",
    summary="mean squared error: the mean over every entry of (output - target)²",
    targets="values",
    class_axis=False,
    torch="torch.nn.functional.mse_loss",
    function='''
def mse_loss(
    output: torch.Tensor, target: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error over every entry, and its gradient with respect to `output`."""
    difference = output - target
    loss = (difference * difference).mean()
    return loss, difference * (2.0 / difference.numel())
''',
    correct=None,
))

declare_loss(LossDeclaration(
    name="cross_entropy",
    summary="softmax cross-entropy at integer labels over the class axis, averaged over the "
            "rest",
    targets="labels",
    class_axis=True,
    torch="torch.nn.functional.cross_entropy",
    function='''
def cross_entropy_loss(
    output: torch.Tensor, target: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax cross-entropy of the logits `output` at the integer labels `target` (the
    output's shape without the class dim `dim`), averaged over the examples; and its gradient
    with respect to `output`: (softmax(output) - one_hot(target)) / examples."""
    labels = target.long().unsqueeze(dim)
    # softmax and log-softmax from one exponential, shifted by the largest logit
    shifted = output - output.amax(dim, keepdim=True)
    exponentials = shifted.exp()
    total = exponentials.sum(dim, keepdim=True)
    picked = torch.gather(shifted - total.log(), dim, labels)
    examples = picked.numel()
    loss = -picked.sum() / examples
    gradient = (exponentials / total).scatter_add(dim, labels, torch.full_like(picked, -1.0))
    return loss, gradient / examples
''',
    correct='''
def cross_entropy_correct(output: torch.Tensor, target: torch.Tensor, dim: int) -> int:
    """How many examples have their label as the largest logit."""
    return int((output.argmax(dim) == target.long()).sum())
''',
))

declare_loss(LossDeclaration(
    name="bce_with_logits",
    summary="binary cross-entropy of the logits (the sigmoid is part of the loss) against "
            "targets in [0, 1], the mean over every entry",
    targets="values",
    class_axis=False,
    torch="torch.nn.functional.binary_cross_entropy_with_logits",
    function='''
def bce_with_logits_loss(
    output: torch.Tensor, target: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy of the logits `output` against `target` in [0, 1], the mean over
    every entry, written in the stable form max(z, 0) - z t + log(1 + exp(-|z|)); and its
    gradient with respect to `output`: (sigmoid(output) - target) / entries."""
    loss = (output.clamp(min=0) - output * target + torch.log1p(torch.exp(-output.abs()))).mean()
    return loss, (torch.sigmoid(output) - target) / output.numel()
''',
    correct='''
def bce_with_logits_correct(output: torch.Tensor, target: torch.Tensor, dim: int) -> int:
    """How many entries fall on the target's side of one half (logit 0)."""
    return int(((output > 0) == (target > 0.5)).sum())
''',
))

declare_loss(LossDeclaration(
    name="xor_error",
    summary="for a Boolean model: the share of entries where the output differs from the "
            "target; its reverse derivative over Z2 is the error itself, output XOR target",
    targets="values",
    class_axis=False,
    torch="none: the reverse derivative of the squared error (y - t)² over Z2 is y XOR t",
    function='''
def xor_error_loss(
    output: torch.Tensor, target: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The share of entries where the Boolean `output` differs from `target`, and the
    gradient with respect to `output` over Z2: the error output XOR target (the reverse
    derivative of the squared error, which over Z2 is the XOR itself)."""
    error = torch.logical_xor(output, target)
    return error.float().mean(), error
''',
    correct='''
def xor_error_correct(output: torch.Tensor, target: torch.Tensor, dim: int) -> int:
    """How many entries equal their target."""
    return int((output == target.bool()).sum())
''',
    field="B",
))


# ---------------------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------------------

Constraint = Literal["non_negative", "positive", "below_one"]
"""What a hyper-parameter's numbers must be: >= 0, > 0, or in [0, 1)."""


@dataclass(frozen=True)
class HyperSpec:
    """A hyper-parameter, named as in `torch.optim`, with its default there (None: none that
    makes sense for this optimiser: it must be written)."""

    name: str
    default: tuple[float, ...] | None
    constraint: Constraint
    arity: int = 1
    """How many numbers: 1, or a tuple (Adam's `betas`: 2)."""

    def text(self, values: tuple[float, ...]) -> str:
        """The value as Python source (and as `ncd fmt` writes it)."""
        numbers = [repr(float(v)) for v in values]
        return numbers[0] if self.arity == 1 else "(" + ", ".join(numbers) + ")"


@dataclass(frozen=True)
class StateSpec:
    """An array the optimiser keeps per parameter, of the parameter's type, and the
    hyper-parameter giving its initial value (None: zeros)."""

    name: str
    init: str | None = None


@dataclass(frozen=True)
class OptimiserDeclaration:
    name: str
    summary: str
    torch: str
    """The `torch.optim` class it equals, with the arguments that make it this optimiser."""
    torch_class: str
    torch_fixed: tuple[tuple[str, bool], ...]
    """Arguments of `torch_class` fixed by the choice of optimiser (`nesterov=True`)."""
    hyper: tuple[HyperSpec, ...]
    state: tuple[StateSpec, ...]
    update: str
    """`def NAME_update(param, grad, *state, step, **hyper)`: one step on one parameter, in
    place; `step` is the count of steps so far, this one included (a 0-dim tensor)."""
    field: Field = "R"
    """The datatype of the parameters it updates."""

    @property
    def update_function(self) -> str:
        return f"{self.name}_update"

    def spec(self, name: str) -> HyperSpec | None:
        return next((h for h in self.hyper if h.name == name), None)


OPTIMISERS: dict[str, OptimiserDeclaration] = {}


def declare_optimiser(declaration: OptimiserDeclaration) -> OptimiserDeclaration:
    if declaration.name in OPTIMISERS:
        raise ValueError(f"the optimiser {declaration.name!r} is declared twice")
    OPTIMISERS[declaration.name] = declaration
    return declaration


_LR = HyperSpec("lr", (1e-3,), "non_negative")
_WEIGHT_DECAY = HyperSpec("weight_decay", (0.0,), "non_negative")
# SGD's default momentum, 0, is plain gradient descent: the momentum optimisers want one.
_MOMENTUM = HyperSpec("momentum", None, "below_one")
_BETAS = HyperSpec("betas", (0.9, 0.999), "below_one", arity=2)
_EPS = HyperSpec("eps", (1e-8,), "positive")

declare_optimiser(OptimiserDeclaration(
    name="sgd",
    summary="gradient descent: p <- p - lr (g + weight_decay p)",
    torch="torch.optim.SGD",
    torch_class="SGD",
    torch_fixed=(),
    hyper=(_LR, _WEIGHT_DECAY),
    state=(),
    update='''
def sgd_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    *,
    step: torch.Tensor,
    lr: float,
    weight_decay: float,
) -> None:
    """Gradient descent (torch.optim.SGD without momentum)."""
    if weight_decay != 0:
        grad = grad + weight_decay * param
    param.sub_(lr * grad)
''',
))

declare_optimiser(OptimiserDeclaration(
    name="momentum",
    summary="gradient descent with momentum: v <- momentum v + (1 - dampening) g (v <- g at "
            "the first step), p <- p - lr v",
    torch="torch.optim.SGD(momentum=...)",
    torch_class="SGD",
    torch_fixed=(),
    hyper=(_LR, _MOMENTUM, HyperSpec("dampening", (0.0,), "below_one"), _WEIGHT_DECAY),
    state=(StateSpec("momentum_buffer"),),
    update='''
def momentum_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    momentum_buffer: torch.Tensor,
    *,
    step: torch.Tensor,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
) -> None:
    """Gradient descent with momentum (torch.optim.SGD with momentum): the buffer starts as
    the first gradient."""
    if weight_decay != 0:
        grad = grad + weight_decay * param
    momentum_buffer.copy_(
        torch.where(step == 1, grad, momentum * momentum_buffer + (1 - dampening) * grad)
    )
    param.sub_(lr * momentum_buffer)
''',
))

declare_optimiser(OptimiserDeclaration(
    name="nesterov",
    summary="Nesterov momentum: v <- momentum v + g (v <- g at the first step), "
            "p <- p - lr (g + momentum v)",
    torch="torch.optim.SGD(momentum=..., nesterov=True)",
    torch_class="SGD",
    torch_fixed=(("nesterov", True),),
    hyper=(_LR, _MOMENTUM, _WEIGHT_DECAY),
    state=(StateSpec("momentum_buffer"),),
    update='''
def nesterov_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    momentum_buffer: torch.Tensor,
    *,
    step: torch.Tensor,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """Nesterov momentum (torch.optim.SGD with nesterov=True): the step looks ahead along
    the buffer."""
    if weight_decay != 0:
        grad = grad + weight_decay * param
    momentum_buffer.copy_(torch.where(step == 1, grad, momentum * momentum_buffer + grad))
    param.sub_(lr * (grad + momentum * momentum_buffer))
''',
))

declare_optimiser(OptimiserDeclaration(
    name="adagrad",
    summary="AdaGrad: s <- s + g², p <- p - lr / (1 + (t - 1) lr_decay) g / (√s + eps)",
    torch="torch.optim.Adagrad",
    torch_class="Adagrad",
    torch_fixed=(),
    hyper=(HyperSpec("lr", (1e-2,), "non_negative"),
           HyperSpec("lr_decay", (0.0,), "non_negative"), _WEIGHT_DECAY,
           HyperSpec("initial_accumulator_value", (0.0,), "non_negative"),
           HyperSpec("eps", (1e-10,), "positive")),
    state=(StateSpec("sum", init="initial_accumulator_value"),),
    update='''
def adagrad_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    sum_of_squares: torch.Tensor,
    *,
    step: torch.Tensor,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    initial_accumulator_value: float,
    eps: float,
) -> None:
    """AdaGrad (torch.optim.Adagrad): each entry's step shrinks with the sum of its squared
    gradients. (`sum_of_squares` started at `initial_accumulator_value`.)"""
    if weight_decay != 0:
        grad = grad + weight_decay * param
    sum_of_squares.add_(grad * grad)
    param.sub_(lr / (1 + (step - 1) * lr_decay) * grad / (sum_of_squares.sqrt() + eps))
''',
))

declare_optimiser(OptimiserDeclaration(
    name="adam",
    summary="Adam: moving averages of g and g² with bias correction; weight decay added to "
            "the gradient",
    torch="torch.optim.Adam",
    torch_class="Adam",
    torch_fixed=(),
    hyper=(_LR, _BETAS, _EPS, _WEIGHT_DECAY),
    state=(StateSpec("exp_avg"), StateSpec("exp_avg_sq")),
    update='''
def adam_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: torch.Tensor,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> None:
    """Adam (torch.optim.Adam): bias-corrected moving averages of the gradient and of its
    square."""
    beta1, beta2 = betas
    if weight_decay != 0:
        grad = grad + weight_decay * param
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    denominator = exp_avg_sq.sqrt() / bias_correction2.sqrt() + eps
    param.sub_(lr / bias_correction1 * exp_avg / denominator)
''',
))

declare_optimiser(OptimiserDeclaration(
    name="adamw",
    summary="AdamW: Adam with decoupled weight decay p <- p (1 - lr weight_decay)",
    torch="torch.optim.AdamW",
    torch_class="AdamW",
    torch_fixed=(),
    hyper=(_LR, _BETAS, _EPS, HyperSpec("weight_decay", (1e-2,), "non_negative")),
    state=(StateSpec("exp_avg"), StateSpec("exp_avg_sq")),
    update='''
def adamw_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: torch.Tensor,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> None:
    """AdamW (torch.optim.AdamW): Adam whose weight decay shrinks the parameter directly
    instead of joining the gradient."""
    beta1, beta2 = betas
    param.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    denominator = exp_avg_sq.sqrt() / bias_correction2.sqrt() + eps
    param.sub_(lr / bias_correction1 * exp_avg / denominator)
''',
))

declare_optimiser(OptimiserDeclaration(
    name="flip",
    summary="gradient descent over Z2, for Boolean parameters: p <- p XOR g (flip each entry "
            "whose gradient is true)",
    torch="none: torch.optim has no optimiser over the Booleans",
    torch_class="",
    torch_fixed=(),
    hyper=(),
    state=(),
    update='''
def flip_update(param: torch.Tensor, grad: torch.Tensor, *, step: torch.Tensor) -> None:
    """Gradient descent over Z2: p - g is p XOR g, so each entry whose gradient is true
    flips."""
    param.logical_xor_(grad)
''',
    field="B",
))
