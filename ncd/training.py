"""Elaboration of training set-ups: `train NAME { model: ...  loss: ...  optimiser: ... }`
becomes an `ir.Training`, or diagnostics that say what is wrong and what to write instead.

What a set-up may name is read from the declarations of `ncd.learning`; this module checks
that the pieces fit together: the model is a definition with one real input whose first axis
is the (symbolic) batch axis and one real output over the same batch axis (both Boolean, and
the parameters too, for a loss and an optimiser over the Booleans); the loss's target
axes are axes of that output; the optimiser's hyper-parameters are its own, numbers, in range.
"""

from __future__ import annotations

from collections.abc import Iterator

from ncd import ir
from ncd import syntax as s
from ncd.context import Context, Reject, array
from ncd.diagnostics import did_you_mean
from ncd.learning import (
    LOSSES,
    OPTIMISERS,
    Field,
    HyperSpec,
    LossDeclaration,
    OptimiserDeclaration,
)

FIELDS = ("model", "loss", "optimiser")
EXAMPLE = "train fit { model: mlp  loss: cross_entropy[n]  optimiser: adam(lr = 0.01) }"


def elaborate_training(ctx: Context, item: s.Training) -> ir.Training | None:
    """The IR of a training set-up, or None after reporting what is wrong with it."""
    try:
        return _Elaborator(ctx, item).training()
    except Reject:
        return None


class _Elaborator:
    def __init__(self, ctx: Context, item: s.Training) -> None:
        self.ctx = ctx
        self.item = item

    def training(self) -> ir.Training | None:
        fields = self.fields()
        model = self.model(fields["model"])
        if model is None:
            return None  # a definition with errors: reported there
        named_loss = LOSSES.get(fields["loss"].value.name)
        field = named_loss.field if named_loss is not None else "R"
        batch, output = self.model_interface(model, fields["model"], field)
        _, loss = self.loss(fields["loss"], output, batch)
        declaration, optimiser = self.optimiser(fields["optimiser"])
        params = tuple(_learned_parameters(model, self.ctx.definitions))
        self.same_field(declaration, field, params, fields["optimiser"])
        hyper = {h.name: h.values for h in optimiser.hyper}
        state = [ir.StateWire(name=spec.name, parameter=parameter.name, array=parameter.array,
                              init=hyper[spec.init][0] if spec.init else 0.0)
                 for parameter in params for spec in declaration.state]
        # The count of steps: Adam's bias correction, AdaGrad's decay and the first step of
        # the momentum buffers read it.
        state.append(ir.StateWire(name="step", array=array(ir.REALS, ())))
        return ir.Training(name=self.item.name.name, doc=self.item.doc, model=model.name,
                           input=model.inputs[0], output=model.outputs[0], loss=loss,
                           optimiser=optimiser, params=params, state=tuple(state),
                           span=self.item.span)

    # ---- the fields
    def fields(self) -> dict[str, s.TrainField]:
        found: dict[str, s.TrainField] = {}
        for field in self.item.fields:
            key = field.key.name
            if key not in FIELDS:
                raise self.ctx.error(
                    "E315", f"a training set-up has no field `{key}`", field.key.span,
                    hint=did_you_mean(key, FIELDS) or
                    "its fields are `model`, `loss` and `optimiser`")
            if key in found:
                raise self.ctx.error("E315", f"the field `{key}` is given twice",
                                     field.key.span, hint="keep one of them")
            found[key] = field
        missing = [key for key in FIELDS if key not in found]
        if missing:
            listed = ", ".join(f"`{key}`" for key in missing)
            raise self.ctx.error(
                "E315", f"the training set-up `{self.item.name.name}` names no {listed}",
                self.item.name.span, hint=f"a set-up names all three: `{EXAMPLE}`")
        return found

    def no_extras(self, field: s.TrainField, *, axes: bool, hypers: bool) -> None:
        what = field.key.name
        if not axes and field.axes is not None:
            raise self.ctx.error("E315", f"the {what} `{field.value.name}` takes no axes in "
                                 "brackets", field.span, hint=f"write `{what}: "
                                 f"{field.value.name}`")
        if not hypers and field.hypers is not None:
            raise self.ctx.error("E315", f"the {what} `{field.value.name}` takes no "
                                 "hyper-parameters", field.span,
                                 hint="hyper-parameters belong to the optimiser: "
                                 "`optimiser: sgd(lr = 0.1)`")

    # ---- the model
    def model(self, field: s.TrainField) -> ir.Definition | None:
        self.no_extras(field, axes=False, hypers=False)
        name = field.value.name
        if name in self.ctx.failed:
            return None
        definition = self.ctx.definitions.get(name)
        if definition is None:
            known = sorted(self.ctx.definitions)
            raise self.ctx.error(
                "E202", f"unknown model `{name}`: no definition of that name", field.value.span,
                hint=did_you_mean(name, known) or (
                    "the model is a definition of this file or one it imports"
                    + (f"; they are {', '.join(f'`{k}`' for k in known)}" if known else "")))
        return definition

    def model_interface(self, model: ir.Definition, field: s.TrainField,
                        datatype: Field = "R") -> tuple[ir.Axis, ir.ArrayType]:
        span = field.value.span
        shown = f"`{model.name}` is ({', '.join(v.array.text() for v in model.inputs)}) -> " \
            f"({', '.join(v.array.text() for v in model.outputs)})"
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise self.ctx.error(
                "E315", "a model takes one array and returns one array", span,
                hint=f"{shown}; wrap it in a definition with one input and one output")
        source, result = model.inputs[0].array, model.outputs[0].array
        if source.dtype.kind != datatype or result.dtype.kind != datatype:
            if datatype == "B":
                raise self.ctx.error("E315", "a Boolean loss takes a model that maps Booleans "
                                     "to Booleans (`B[...]`)", span, hint=shown)
            raise self.ctx.error("E315", "a model maps reals to reals (`R[...]`)", span,
                                 hint=shown + ("; a Boolean circuit takes the loss `xor_error` "
                                               "and the optimiser `flip`"
                                               if result.dtype.kind == "B" else ""))
        axes = source.shape.axes
        # Declared without a size (`axis b`), whether or not `-D b=...` fixes it for this run.
        if not axes or not (isinstance(axes[0].size, ir.SizeSym)
                            or axes[0].name in self.ctx.unsized):
            raise self.ctx.error(
                "E315", "a model's input starts with the batch axis, a symbolic axis",
                span, hint=f"{shown}; declare the batch axis without a size (`axis b`) and "
                "put it first: `X: R[b, ...]`")
        batch = axes[0]
        if not result.shape.axes or result.shape.axes[0].name != batch.name:
            raise self.ctx.error(
                "E315", f"a model's output starts with its input's batch axis `{batch.name}`",
                span, hint=f"{shown}; return an array `R[{batch.name}, ...]`")
        return batch, result

    # ---- the loss
    def loss(self, field: s.TrainField, output: ir.ArrayType,
             batch: ir.Axis) -> tuple[LossDeclaration, ir.Loss]:
        self.no_extras(field, axes=True, hypers=False)
        declaration = LOSSES.get(field.value.name)
        if declaration is None:
            raise self.ctx.error(
                "E315", f"unknown loss `{field.value.name}`", field.value.span,
                hint=did_you_mean(field.value.name, LOSSES) or
                "the losses are " + ", ".join(f"`{name}`" for name in LOSSES))
        if not declaration.class_axis:
            self.no_extras(field, axes=False, hypers=False)
            loss = ir.Loss(name=declaration.name, target=output, span=field.span)
            return declaration, loss
        written = field.axes or ()
        candidates = [a.name for a in output.shape.axes if a.name != batch.name]
        example = f"`loss: {declaration.name}[{candidates[0] if candidates else 'n'}]`"
        if len(written) != 1:
            raise self.ctx.error(
                "E315", f"the loss `{declaration.name}` names one class axis in brackets",
                field.span, hint=f"the model's output is {output.text()}: write {example}")
        (ident,) = written
        names = output.shape.names
        if ident.name not in names or ident.name == batch.name:
            why = "the batch axis" if ident.name == batch.name else \
                f"not an axis of the model's output {output.text()}"
            raise self.ctx.error(
                "E315", f"the class axis `{ident.name}` of `{declaration.name}` is {why}",
                ident.span, hint=f"name the axis the model's output has one logit per class "
                f"on: {example}" if candidates else
                f"the model's output {output.text()} has no class axis: return the logits "
                f"`R[{batch.name}, n]`")
        class_axis = next(a for a in output.shape.axes if a.name == ident.name)
        labels = array(ir.Datatype(kind="N", bound=class_axis.size),
                       [a for a in output.shape.axes if a.name != ident.name])
        return declaration, ir.Loss(name=declaration.name, axes=(class_axis,), target=labels,
                                    span=field.span)

    # ---- the optimiser
    def optimiser(self, field: s.TrainField) -> tuple[OptimiserDeclaration, ir.Optimiser]:
        self.no_extras(field, axes=False, hypers=True)
        declaration = OPTIMISERS.get(field.value.name)
        if declaration is None:
            raise self.ctx.error(
                "E315", f"unknown optimiser `{field.value.name}`", field.value.span,
                hint=did_you_mean(field.value.name, OPTIMISERS) or
                "the optimisers are " + ", ".join(f"`{name}`" for name in OPTIMISERS))
        given: dict[str, tuple[float, ...]] = {}
        for hyper in field.hypers or ():
            spec = declaration.spec(hyper.name.name)
            if spec is None:
                raise self.ctx.error(
                    "E315", f"the optimiser `{declaration.name}` has no hyper-parameter "
                    f"`{hyper.name.name}`", hyper.name.span,
                    hint=_unknown_hyper_hint(hyper.name.name, declaration))
            if spec.name in given:
                raise self.ctx.error("E315", f"`{spec.name}` is given twice", hyper.name.span,
                                     hint="keep one of them")
            given[spec.name] = self.hyper_value(hyper, spec, declaration)
        values: list[ir.HyperParameter] = []
        for spec in declaration.hyper:
            value = given.get(spec.name, spec.default)
            if value is None:
                raise self.ctx.error(
                    "E315", f"the optimiser `{declaration.name}` needs `{spec.name}`",
                    field.span, hint=f"write `optimiser: {declaration.name}({spec.name} = 0.9"
                    f"{', lr = 0.01' if 'lr' not in given else ''})` (torch.optim's default, "
                    "0, would be plain `sgd`)")
            values.append(ir.HyperParameter(name=spec.name, values=value))
        return declaration, ir.Optimiser(name=declaration.name, hyper=tuple(values),
                                         span=field.span)

    def same_field(self, declaration: OptimiserDeclaration, field: Field,
                   params: tuple[ir.Parameter, ...], written: s.TrainField) -> None:
        """The optimiser updates parameters of the model's datatype: `flip` Booleans, the
        others reals."""
        wanted = "`flip`" if field == "B" else "an optimiser of reals (`sgd`, `adam`, ...)"
        stray = next((p for p in params if p.array.dtype.kind != declaration.field), None)
        if declaration.field != field or stray is not None:
            held = "Booleans" if declaration.field == "B" else "reals"
            what = f"`{stray.name}` holds {stray.array.dtype.text()}" if stray is not None \
                else f"the model is over {'Booleans' if field == 'B' else 'reals'}"
            raise self.ctx.error(
                "E315", f"the optimiser `{declaration.name}` updates parameters of {held}, but "
                f"{what}", written.value.span, hint=f"use {wanted}")

    def hyper_value(self, hyper: s.Hyper, spec: HyperSpec,
                    declaration: OptimiserDeclaration) -> tuple[float, ...]:
        example = spec.text(spec.default or (0.5,) * spec.arity)
        shape = "a number" if spec.arity == 1 else \
            f"a tuple of {spec.arity} numbers, like `{spec.name} = {example}`"
        if len(hyper.values) != spec.arity or hyper.is_tuple != (spec.arity > 1):
            raise self.ctx.error("E315", f"`{spec.name}` of `{declaration.name}` is {shape}",
                                 hyper.span)
        values = tuple(self.number(expr, spec.name) for expr in hyper.values)
        for value, expr in zip(values, hyper.values, strict=True):
            problem = {"non_negative": value < 0, "positive": value <= 0,
                       "below_one": not 0 <= value < 1}[spec.constraint]
            if problem:
                wanted = {"non_negative": "at least 0", "positive": "above 0",
                          "below_one": "at least 0 and below 1"}[spec.constraint]
                raise self.ctx.error("E315", f"`{spec.name}` must be {wanted}, not {value:g}",
                                     expr.span)
        return values

    def number(self, expr: s.Expr, name: str) -> float:
        """The value of a constant expression (`1e-3`, `-0.5`, `1 / 3`)."""
        match expr:
            case s.Number(value=value):
                return float(value)
            case s.Neg(operand=operand):
                return -self.number(operand, name)
            case s.BinOp(op=op, left=left, right=right) if op in ("+", "-", "*", "/"):
                a, b = self.number(left, name), self.number(right, name)
                if op == "+":
                    return a + b
                if op == "-":
                    return a - b
                if op == "*":
                    return a * b
                if b == 0:
                    raise self.ctx.error("E315", "division by zero", expr.span)
                return a / b
        raise self.ctx.error("E315", f"`{name}` is a number", expr.span,
                             hint=f"write a number: `{name} = 0.01`")


def _unknown_hyper_hint(name: str, declaration: OptimiserDeclaration) -> str:
    if name == "nesterov":
        return "Nesterov momentum is its own optimiser: `optimiser: nesterov(momentum = 0.9)`"
    if name == "momentum" and declaration.name == "sgd":
        return "gradient descent with momentum is its own optimiser: " \
            "`optimiser: momentum(momentum = 0.9)`"
    known = ", ".join(f"`{spec.name}`" for spec in declaration.hyper)
    close = did_you_mean(name, [spec.name for spec in declaration.hyper])
    return (close + "; " if close else "") + f"`{declaration.name}` takes {known}"


def _learned_parameters(model: ir.Definition,
                        definitions: dict[str, ir.Definition]) -> Iterator[ir.Parameter]:
    """The learned parameters of the model and of the definitions it calls, each definition
    once, callers before callees."""
    seen: set[str] = set()
    pending = [model.name]
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        definition = model if name == model.name else _find(name, definitions)
        if definition is None:
            continue
        yield from (p for p in definition.params if not p.buffer)
        pending.extend(term.op.definition for term in ir.walk(definition.body)
                       if isinstance(term, ir.Broadcasted) and isinstance(term.op, ir.CallOp))


def _find(name: str, definitions: dict[str, ir.Definition]) -> ir.Definition | None:
    """A callee by its (possibly qualified) name."""
    return definitions.get(name) or next(
        (d for d in definitions.values() if d.name == name), None)


def describe(training: ir.Training) -> str:
    """One line for a person: `fit: mlp, cross_entropy[n], adam(lr=0.01, betas=(0.9, ...))`."""
    axes = f"[{', '.join(a.name for a in training.loss.axes)}]" if training.loss.axes else ""
    hyper = ", ".join(f"{h.name}={_number_text(h.values)}" for h in training.optimiser.hyper)
    return (f"{training.name}: {training.model}, {training.loss.name}{axes}, "
            f"{training.optimiser.name}({hyper})")


def _number_text(values: tuple[float, ...]) -> str:
    numbers = [f"{v:g}" for v in values]
    return numbers[0] if len(numbers) == 1 else "(" + ", ".join(numbers) + ")"
