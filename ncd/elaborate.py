"""Elaboration and checking: syntax tree to typed IR.

Axes are declared once and sized (with overrides); each definition's let-style statements are
read in order into a dataflow graph of steps, checked as they are read (axes align by name,
sizes agree, datatypes fit), and wired into a categorical term (`ncd.wiring`). Errors are
recorded and elaboration goes on with the next statement, so independent errors are all
reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import assert_never

from ncd import ir
from ncd import syntax as s
from ncd.context import AxisInfo, BlockGroup, Context, Reject, Step, Value, array, port, shape
from ncd.diagnostics import Note, did_you_mean
from ncd.initialisers import (
    BOOLEAN_INITIALISERS,
    BUFFER_INITIALISERS,
    INITIALISERS,
    check_initialiser,
)
from ncd.ops.arguments import constant_value
from ncd.sizes import Size, SizeLimit, all_symbols, from_ir
from ncd.statements import elaborate_body, single
from ncd.wiring import build_term

# ---------------------------------------------------------------------------------------
# sizes written in the source
# ---------------------------------------------------------------------------------------


def size_expr(ctx: Context, expr: s.Expr, *, what: str = "a size") -> Size:
    """Evaluate a size expression over declared axes (`m / h`, `4 * m`, `x - 2`)."""
    match expr:
        case s.Number(value=value, is_int=True):
            return Size.const(int(value))
        case s.Number(span=span):
            raise ctx.error("E309", f"{what} must be an integer, not `{expr.value}`", span)
        case s.Var(name=name, span=span):
            info = ctx.axes.get(name)
            if info is None:
                raise ctx.error("E201", f"unknown axis `{name}`", span,
                                hint=did_you_mean(name, ctx.axes) or
                                f"declare it first: `axis {name} = ...`")
            return info.size
        case s.Neg(operand=operand):
            return -size_expr(ctx, operand, what=what)
        case s.BinOp(op=op, left=left, right=right, span=span) if op != "%":
            a, b = size_expr(ctx, left, what=what), size_expr(ctx, right, what=what)
            try:
                if op == "+":
                    return a + b
                if op == "-":
                    return a - b
                if op == "*":
                    return a * b
                if b.is_const and b.constant == 0:
                    raise ctx.error("E309", "division of a size by zero", span)
                if op == "//":
                    return a.floor_div(b)
                if a.divisible_by(b) is False:
                    raise ctx.error("E309", f"{a} is not divisible by {b}", span,
                                    hint="use `//` for a division that rounds down")
                return a.exact_div(b)
            except SizeLimit as limit:
                raise ctx.error("E309", f"{what} is too large to check: {limit}", span) from None
    raise ctx.error("E309", f"{what} must be an arithmetic expression over axes and integers",
                    expr.span)


def declare_axes(ctx: Context, decls: Sequence[s.AxisDecl], overrides: Mapping[str, int]) -> None:
    """Declare and size the axes of `decls`, in order. An axis declared without a size
    (`axis m`) in one file may be declared again in another: without a size, it is the same
    axis; with one, that size is the axis's for the whole program (a library's definitions
    are generic over the sizes its user declares)."""
    for decl in decls:
        name = decl.name.name
        refined: AxisInfo | None = None
        if name in ctx.axes:
            previous = ctx.axes[name]
            if previous.span is not None and previous.span.file != decl.name.span.file and (
                    decl.size is None or name in ctx.unsized):
                if decl.size is None:
                    continue  # the same axis, sized wherever it is sized
                refined = previous
            else:
                ctx.error("E204", f"axis `{name}` is declared twice", decl.name.span,
                          notes=[Note(previous.span, "first declared here")]
                          if previous.span else ())
                continue
        if name in overrides:
            try:
                size, symbolic = Size.const(overrides[name]), False
            except SizeLimit:
                ctx.error("E314", f"`-D {name}=...` is too large", None)
                size, symbolic = Size.sym(name), True
        elif decl.size is None:
            size, symbolic = Size.sym(name), True
        else:
            try:
                size = size_expr(ctx, decl.size, what=f"the size of axis `{name}`")
            except Reject:
                size = Size.sym(name)
            symbolic = False
        if size.is_const and (size.value is None or size.value <= 0):
            ctx.error("E309", f"axis `{name}` must have a positive integer size, not {size}",
                      decl.span)
            size = Size.sym(name)
        if decl.size is None:
            ctx.unsized.add(name)
        else:
            ctx.unsized.discard(name)
        ctx.axes[name] = AxisInfo(name, size, decl.name.span, symbolic)
        ctx.axis_decls[name] = decl
        if refined is not None:
            _resize(ctx, name, ctx.axis_decls)


def _resize(ctx: Context, name: str, decls: Mapping[str, s.AxisDecl]) -> None:
    """Size again, in the order they were declared, the axes sized from `name` (directly or
    through others) while it had no size: their declarations are read again."""
    changed = {name}
    for other, info in list(ctx.axes.items()):
        decl = decls.get(other)
        if other in changed or decl is None or decl.size is None or \
                not changed & all_symbols(info.size):
            continue
        try:
            size = size_expr(ctx, decl.size, what=f"the size of axis `{other}`")
        except Reject:
            size = Size.sym(other)
        if size.is_const and (size.value is None or size.value <= 0):
            ctx.error("E309", f"axis `{other}` must have a positive integer size, not {size} "
                      f"(with the size `{name}` has here)", decl.span)
            size = Size.sym(other)
        ctx.axes[other] = AxisInfo(other, size, info.span, info.symbolic)
        changed.add(other)


def resolve_type(ctx: Context, type_expr: s.TypeExpr) -> ir.ArrayType:
    axes: list[ir.Axis] = []
    seen: dict[str, s.Ident] = {}
    for ident in type_expr.axes:
        info = ctx.axes.get(ident.name)
        if info is None:
            raise ctx.error("E201", f"unknown axis `{ident.name}`", ident.span,
                            hint=did_you_mean(ident.name, ctx.axes) or
                            f"declare it: `axis {ident.name}` (symbolic) or "
                            f"`axis {ident.name} = 64`")
        if ident.name in seen:
            raise ctx.error("E301", f"axis `{ident.name}` appears twice in one array type",
                            ident.span, hint="give the second axis its own name")
        seen[ident.name] = ident
        axes.append(info.axis)
    if type_expr.dtype == "N":
        assert type_expr.bound is not None
        bound = size_expr(ctx, type_expr.bound, what="the bound of N")
        if bound.is_const and bound.constant <= 0:
            raise ctx.error("E309", f"`N[{bound}]` holds no values: the bound must be positive",
                            type_expr.bound.span)
        dtype = ir.Datatype(kind="N", bound=bound.to_ir())
    elif type_expr.dtype == "B":
        dtype = ir.BOOLEANS
    else:
        assert type_expr.dtype == "R", type_expr.dtype  # the grammar writes R, N or B
        dtype = ir.REALS
    return array(dtype, axes)


# ---------------------------------------------------------------------------------------
# definitions
# ---------------------------------------------------------------------------------------


class DefinitionBuilder:
    """Elaborates one definition's body into a graph of steps, then into a term."""

    def __init__(self, ctx: Context, name: str):
        self.ctx = ctx
        self.name = name
        self.scope: dict[str, Value | None] = {}  # None: bound by a statement that failed
        self.params: dict[str, ir.Parameter] = {}
        # Parameters whose declaration failed (reported there): their uses stay quiet.
        self.failed_params: set[str] = set()
        self.steps: list[Step | BlockGroup] = []
        self.instances: dict[str, int] = {}
        self.generated: dict[str, int] = {}
        # The wire each parameter read as data is put on, per list of steps (a block reads
        # its parameters inside itself): every later use there shares it.
        self.param_wires: dict[tuple[int, str], tuple[list[Step | BlockGroup], Value]] = {}

    # ---- names
    def fresh_name(self, base: str) -> str:
        count = self.generated.get(base, 0) + 1
        self.generated[base] = count
        return base if count == 1 else f"{base}_{count}"

    def instance_name(self, definition: str) -> str:
        count = self.instances.get(definition, 0) + 1
        self.instances[definition] = count
        return definition if count == 1 else f"{definition}_{count}"

    # ---- values and steps
    def new_value(self, array_type: ir.ArrayType, name: str | None, span: ir.Span | None,
                  base: str = "t") -> Value:
        return Value(array_type, name or self.fresh_name(base), span)

    def add_step(self, term: ir.Term, inputs: Sequence[Value], outputs: Sequence[Value]) -> None:
        self.steps.append(Step(term, list(inputs), list(outputs)))

    def single(self, expr: s.Expr, name: str | None = None) -> Value:
        """The one array an expression (an operator's argument) evaluates to."""
        return single(self, expr, name)

    def lookup(self, name: str, span: ir.Span) -> Value:
        if name in self.scope:
            value = self.scope[name]
            if value is None:
                raise Reject(name)  # already reported where it was bound
            return value
        if name in self.failed_params:
            raise Reject(name)  # its declaration's error is reported already
        if name in self.params:
            return self.param_wire(self.params[name], span)
        if name in self.ctx.definitions:
            raise self.ctx.error("E207", f"`{name}` is a definition; call it: `{name}(...)`",
                                 span)
        raise self.ctx.error("E200", f"unknown variable `{name}`", span,
                             hint=did_you_mean(name, [n for n in self.scope if n]) or
                             "bind it first with `=`, or add it to the definition's inputs")

    # ---- parameters
    def param_wire(self, parameter: ir.Parameter, span: ir.Span) -> Value:
        """The parameter put onto a wire (a `ParameterOp`), to be read as data; made once
        per list of steps and shared by every later use there."""
        key = (id(self.steps), parameter.name)
        found = self.param_wires.get(key)
        if found is not None and found[0] is self.steps:
            return found[1]
        degree = shape([])
        value = Value(parameter.array, parameter.name, span)
        op: ir.Operator = ir.BufferOp() if parameter.buffer else ir.ParameterOp()
        term = ir.Broadcasted(
            dom=(), cod=(parameter.array,), span=span, op=op, degree=degree,
            inputs=(), params=(port(parameter.array, parameter.array.names, degree,
                                    parameter.name),),
            outputs=(port(parameter.array, parameter.array.names, degree, parameter.name),))
        self.add_step(term, [], [value])
        self.param_wires[key] = (self.steps, value)
        return value

    def parameter(self, ident: s.Ident, expected: ir.ArrayType | None, what: str) -> ir.Parameter:
        """A parameter named in an operator's argument list, declared here if it is new."""
        if ident.name in self.failed_params and ident.name not in self.scope:
            raise Reject(ident.name)  # its declaration's error is reported already
        if ident.name in self.scope:
            raise self.ctx.error(
                "E207", f"`{ident.name}` is an array on a wire, but {what} takes a parameter here",
                ident.span, hint="name a parameter (declared with `param` or new)")
        existing = self.params.get(ident.name)
        if existing is None:
            if expected is None:
                raise self.ctx.error("E312", f"declare the parameter `{ident.name}` with `param`",
                                     ident.span)
            parameter = ir.trusted(ir.Parameter, name=ident.name, array=expected, init="default",
                                   init_args=(), span=ident.span, buffer=False)
            self.params[ident.name] = parameter
            return parameter
        if expected is not None:
            self.check_same_axes(existing.array, expected, ident.span,
                                 f"parameter `{ident.name}`", existing.span)
        return existing

    def buffer(self, ident: s.Ident, expected: ir.ArrayType, init: str,
               what: str) -> ir.Parameter:
        """A buffer named in an operator's argument list (`batchnorm`'s running statistics),
        declared here with the initialiser `init` if it is new."""
        if ident.name in self.scope:
            raise self.ctx.error(
                "E207", f"`{ident.name}` is an array on a wire, but {what} is a buffer",
                ident.span, hint="name a buffer (declared with `buffer` or new)")
        existing = self.params.get(ident.name)
        if existing is None:
            parameter = ir.Parameter(name=ident.name, array=expected, init=init,
                                     span=ident.span, buffer=True)
            self.params[ident.name] = parameter
            return parameter
        if not existing.buffer:
            raise self.ctx.error(
                "E312", f"`{ident.name}` is a learned parameter, but {what} is a buffer",
                ident.span, notes=[Note(existing.span, "declared here")],
                hint=f"declare it with `buffer {ident.name}: ...`, or use a new name")
        self.check_same_axes(existing.array, expected, ident.span, f"buffer `{ident.name}`",
                             existing.span)
        return existing

    def declare_param(self, stmt: s.ParamDecl) -> None:
        """`param NAME: TYPE = INIT` or `buffer NAME: TYPE = INIT`. A mistake in the type's
        datatype or in the initialiser is reported, and the array is still declared (as reals,
        with the default initialiser), so that its uses stay quiet."""
        name = stmt.name.name
        noun = "buffer" if stmt.buffer else "parameter"
        if name in self.params:
            raise self.ctx.error("E312", f"{noun} `{name}` is declared twice", stmt.name.span,
                                 notes=[Note(self.params[name].span, "first declared here")])
        try:
            array_type = resolve_type(self.ctx, stmt.type)
        except Reject:  # its uses stay quiet: one error for the one mistake
            self.failed_params.add(name)
            raise
        fallback = ir.Parameter(name=name, array=array_type.model_copy(update={"dtype": ir.REALS}),
                                init="zeros" if stmt.buffer else "default",
                                span=stmt.name.span, buffer=stmt.buffer)
        try:
            boolean = array_type.dtype.kind == "B" and not stmt.buffer
            if array_type.dtype.kind != "R" and not boolean:
                raise self.ctx.error("E302", f"{noun}s hold reals: write `R[...]`" + (
                    " (a learned parameter may hold Booleans, `B[...]`)" if not stmt.buffer
                    else ""), stmt.type.span)
            init, init_args = self.initialiser(stmt, boolean)
        except Reject:  # reported; the array still exists (as reals), so its uses stay quiet
            self.params[name] = fallback
            raise
        self.params[name] = ir.Parameter(name=name, array=array_type, init=init,
                                         init_args=init_args, span=stmt.name.span,
                                         buffer=stmt.buffer)

    def initialiser(self, stmt: s.ParamDecl, boolean: bool = False
                    ) -> tuple[str, tuple[float, ...]]:
        """The initialiser of a declaration and its numbers, checked (a Boolean parameter's
        default is `bernoulli(0.5)`)."""
        if stmt.init is None:
            if stmt.buffer:
                raise self.ctx.error(
                    "E312", f"the buffer `{stmt.name.name}` needs an initialiser", stmt.span,
                    hint="write `= zeros`, `= ones` or `= constant(c)`")
            return ("bernoulli", (0.5,)) if boolean else ("default", ())
        init = stmt.init.name.name
        allowed = BUFFER_INITIALISERS if stmt.buffer else BOOLEAN_INITIALISERS if boolean \
            else sorted(INITIALISERS)
        if init not in allowed or stmt.init.items is not None:
            raise self.ctx.error("E312", f"unknown initialiser `{init}`" + (
                " for a buffer (a buffer's values are fixed, not drawn at random)"
                if stmt.buffer and init in INITIALISERS else ""), stmt.init.name.span,
                hint=did_you_mean(init, allowed) or "use one of: " + ", ".join(allowed))
        args = [constant_value(self.ctx, arg) for arg in stmt.init.args]
        check_initialiser(self.ctx, stmt.init, args)
        return init, tuple(args)

    # ---- checks shared by operators
    def check_same_axes(self, actual: ir.ArrayType, expected: ir.ArrayType, span: ir.Span,
                        what: str, other: ir.Span | None = None) -> None:
        """Same axis names (any order) with equal sizes, and the same datatype."""
        if set(actual.names) != set(expected.names):
            missing = [n for n in expected.names if n not in actual.names]
            extra = [n for n in actual.names if n not in expected.names]
            detail = []
            if missing:
                detail.append("missing " + ", ".join(f"`{n}`" for n in missing))
            if extra:
                detail.append("unexpected " + ", ".join(f"`{n}`" for n in extra))
            raise self.ctx.error(
                "E301", f"{what} should have axes [{', '.join(expected.names)}] but has "
                f"[{', '.join(actual.names)}] ({'; '.join(detail)})", span,
                notes=[Note(other, "declared here")] if other else (),
                hint="axes align by name; rename one with `rename[a -> b](X)`")
        for axis in expected.shape.axes:
            self.check_size(actual.shape.axis(axis.name), axis, span, what, other)
        self.check_dtype(actual, expected.dtype, span, what)

    def check_size(self, actual: ir.Axis, expected: ir.Axis, span: ir.Span, what: str,
                   other: ir.Span | None = None) -> None:
        if actual.size is expected.size:  # mostly so: the axes are shared (and `from_ir`
            return  # hashes its argument)
        a, b = from_ir(actual.size), from_ir(expected.size)
        if a != b:
            notes = [Note(other, f"`{expected.name}` has size {b} here")] if other else []
            raise self.ctx.error(
                "E300", f"axis `{actual.name}` of {what} has size {a}, but {b} is expected",
                span, notes=notes,
                hint="sizes must agree for axes of the same name")

    def check_dtype(self, actual: ir.ArrayType, expected: ir.Datatype, span: ir.Span,
                    what: str) -> None:
        if actual.dtype.kind != expected.kind or (
                expected.kind == "N" and expected.bound is not None and actual.dtype.bound
                is not None and from_ir(actual.dtype.bound) != from_ir(expected.bound)):
            raise self.ctx.error("E302", f"{what} should hold {expected.text()} but holds "
                                 f"{actual.dtype.text()}", span)

    def require_reals(self, value: Value, span: ir.Span, what: str) -> None:
        if value.array.dtype.kind != "R":
            hint = None
            if value.array.dtype.kind == "N":
                hint = "indices enter a model through `embedding[...]`"
            raise self.ctx.error(
                "E302", f"{what} needs an array of reals R, but `{value.name}` holds "
                f"{value.array.dtype.text()}", span, hint=hint)

    def require_axes(self, value: Value, names: Sequence[s.Ident], what: str) -> None:
        for ident in names:
            if ident.name not in value.array.names:
                raise self.ctx.error(
                    "E301", f"{what}: `{value.name}` has no axis `{ident.name}` (its axes are "
                    f"[{', '.join(value.array.names)}])", ident.span,
                    hint=did_you_mean(ident.name, value.array.names))

    def global_axis(self, ident: s.Ident) -> ir.Axis:
        info = self.ctx.axes.get(ident.name)
        if info is None:
            raise self.ctx.error("E201", f"unknown axis `{ident.name}`", ident.span,
                                 hint=did_you_mean(ident.name, self.ctx.axes) or
                                 f"declare it with `axis {ident.name} = ...`")
        return info.axis

    def unify_axes(self, values: Sequence[tuple[Value, ir.Span]], what: str) -> list[ir.Axis]:
        """The union of the values' axes (first-seen order), checking shared sizes agree."""
        seen: dict[str, tuple[ir.Axis, ir.Span]] = {}
        for value, span in values:
            for axis in value.array.shape.axes:
                if axis.name in seen:
                    first, first_span = seen[axis.name]
                    # the same size node is the same size (the axes are mostly shared)
                    if first.size is not axis.size and from_ir(first.size) != from_ir(axis.size):
                        raise self.ctx.error(
                            "E300", f"{what}: axis `{axis.name}` has size {from_ir(axis.size)} "
                            f"here but {from_ir(first.size)} in another operand", span,
                            notes=[Note(first_span, f"`{axis.name}` has size "
                                        f"{from_ir(first.size)} here")])
                else:
                    seen[axis.name] = (axis, span)
        return [axis for axis, _ in seen.values()]

    # ---- generic broadcasted steps
    def broadcast(self, op: ir.Operator, inputs: Sequence[tuple[Value, Sequence[str]]],
                  outputs: Sequence[tuple[ir.ArrayType, Sequence[str], str | None]],
                  span: ir.Span, params: Sequence[tuple[ir.Parameter, Sequence[str]]] = (),
                  degree: Sequence[ir.Axis] | None = None) -> list[Value]:
        """Record a broadcasted operation; the degree defaults to the first output's tiling
        axes."""
        if degree is None:
            first_array, first_targets, _ = outputs[0]
            degree = [a for a in first_array.shape.axes if a.name not in first_targets]
        degree_shape = shape(degree)
        in_ports = tuple(port(v.array, t, degree_shape, v.name) for v, t in inputs)
        param_ports = tuple(port(p.array, t, degree_shape, p.name) for p, t in params)
        out_values = [self.new_value(a, n, span, base=op.kind) for a, _, n in outputs]
        out_ports = tuple(port(a, t, degree_shape, v.name)
                          for (a, t, _), v in zip(outputs, out_values, strict=True))
        # Made without validating it again (`ir.trusted`): every field is a node made and
        # checked already; validating the term was a large share of checking a statement.
        term = ir.trusted(
            ir.Broadcasted, dom=tuple(v.array for v, _ in inputs),
            cod=tuple(v.array for v in out_values), span=span, kind="broadcasted", op=op,
            degree=degree_shape, inputs=in_ports, params=param_ports, outputs=out_ports)
        self.add_step(term, [v for v, _ in inputs], out_values)
        return out_values


def elaborate_definition(ctx: Context, definition: s.Definition) -> ir.Definition | None:
    builder = DefinitionBuilder(ctx, definition.name.name)
    inputs: list[Value] = []
    failed = False
    for signature_input in definition.inputs:
        name = signature_input.name.name
        if name in builder.scope:
            ctx.error("E203", f"input `{name}` is named twice", signature_input.name.span)
            failed = True
            continue
        try:
            array_type = resolve_type(ctx, signature_input.type)
        except Reject:
            builder.scope[name] = None
            failed = True
            continue
        value = Value(array_type, name, signature_input.name.span)
        builder.scope[name] = value
        inputs.append(value)
    outputs: list[tuple[str, ir.ArrayType, s.SignatureOutput]] = []
    for index, signature_output in enumerate(definition.outputs):
        try:
            array_type = resolve_type(ctx, signature_output.type)
        except Reject:
            failed = True
            continue
        name = signature_output.name.name if signature_output.name else (
            "Y" if len(definition.outputs) == 1 else f"Y{index + 1}")
        outputs.append((name, array_type, signature_output))
    # With a broken signature the body is still checked, but not against the signature.
    results = elaborate_body(builder, definition, None if failed else outputs)
    if failed or results is None:
        return None
    body = build_term(builder.steps, inputs, results, definition.span)
    # Made without validating it again (`ir.trusted`): its parts are checked nodes.
    return ir.trusted(
        ir.Definition, name=definition.name.name, doc=definition.doc,
        inputs=tuple(ir.trusted(ir.Variable, name=v.name, array=v.array) for v in inputs),
        outputs=tuple(ir.trusted(ir.Variable, name=name, array=a) for name, a, _ in outputs),
        params=tuple(builder.params.values()), body=body, span=definition.name.span,
        leading_dims=True)


def call_term(ctx: Context, definition: ir.Definition, instance: str,
              span: ir.Span | None) -> ir.Broadcasted:
    """A definition used as an operation with no batch lift (point-free form)."""
    degree = shape([])
    return ir.Broadcasted(
        dom=definition.domain, cod=definition.codomain, span=span,
        op=ir.CallOp(definition=definition.name, instance=instance), degree=degree,
        inputs=tuple(port(v.array, v.array.names, degree, v.name) for v in definition.inputs),
        outputs=tuple(port(v.array, v.array.names, degree, None) for v in definition.outputs))


def elaborate_pointfree(ctx: Context, item: s.PointFree) -> ir.Definition | None:
    instances: dict[str, int] = {}

    def term(expr: s.PfExpr) -> ir.Term:
        match expr:
            case s.PfName(name=ident):
                definition = ctx.definitions.get(ident.name)
                if definition is None and ident.name in ctx.failed:
                    raise Reject(ident.name)  # its own errors are reported already
                if definition is None:
                    raise ctx.error("E202", f"unknown definition `{ident.name}`", ident.span,
                                    hint=did_you_mean(ident.name, ctx.definitions))
                count = instances.get(ident.name, 0) + 1
                instances[ident.name] = count
                instance = ident.name if count == 1 else f"{ident.name}_{count}"
                return call_term(ctx, definition, instance, ident.span)
            case s.PfCompose(terms=parts, span=span):
                terms = [term(p) for p in parts]
                for left, right, part in zip(terms, terms[1:], parts[1:], strict=False):
                    check_interface(ctx, left.cod, right.dom, part.span)
                return ir.Composed(dom=terms[0].dom, cod=terms[-1].cod, terms=tuple(terms),
                                   span=span)
            case s.PfTensor(terms=parts, span=span):
                terms = [term(p) for p in parts]
                return ir.Product(dom=tuple(a for t in terms for a in t.dom),
                                  cod=tuple(a for t in terms for a in t.cod), terms=tuple(terms),
                                  span=span)
        assert_never(expr)

    try:
        body = term(item.expr)
    except Reject:
        return None
    names = _io_names(len(body.dom), "X")
    out_names = _io_names(len(body.cod), "Y")
    generated: dict[str, int] = {}

    def fresh(base: str) -> str:
        generated[base] = generated.get(base, 0) + 1
        return base if generated[base] == 1 else f"{base}_{generated[base]}"

    body, _ = _name_wires(body, names, out_names, fresh)
    return ir.Definition(
        name=item.name.name, doc=item.doc,
        inputs=tuple(ir.Variable(name=n, array=a) for n, a in zip(names, body.dom, strict=True)),
        outputs=tuple(ir.Variable(name=n, array=a)
                      for n, a in zip(out_names, body.cod, strict=True)),
        params=(), body=body, span=item.name.span)


def _name_wires(term: ir.Term, inputs: Sequence[str | None], outputs: Sequence[str | None],
                fresh: Callable[[str], str]) -> tuple[ir.Term, list[str | None]]:
    """Label the wires of a point-free term as the equivalent let-style definition does
    (`def h = f ; g` as `return g(f(X))`): the definition's inputs and outputs by their names,
    a wire in between by the definition that produces it. Returns the term and the names of
    its outputs."""
    match term:
        case ir.Broadcasted(op=ir.CallOp(definition=callee)):
            outs: list[str | None] = [name if name is not None else fresh(callee)
                                      for name in outputs]
            ports_in = tuple(p.model_copy(update={"name": n})
                             for p, n in zip(term.inputs, inputs, strict=True))
            ports_out = tuple(p.model_copy(update={"name": n})
                              for p, n in zip(term.outputs, outs, strict=True))
            return term.model_copy(update={"inputs": ports_in, "outputs": ports_out}), outs
        case ir.Composed(terms=terms):
            named: list[ir.Term] = []
            current: list[str | None] = list(inputs)
            for index, sub in enumerate(terms):
                wanted = list(outputs) if index == len(terms) - 1 else [None] * len(sub.cod)
                sub, current = _name_wires(sub, current, wanted, fresh)
                named.append(sub)
            return term.model_copy(update={"terms": tuple(named)}), current
        case ir.Product(terms=terms):
            named, names = [], []
            at_in = at_out = 0
            for sub in terms:
                sub, sub_names = _name_wires(sub, inputs[at_in:at_in + len(sub.dom)],
                                             outputs[at_out:at_out + len(sub.cod)], fresh)
                at_in, at_out = at_in + len(sub.dom), at_out + len(sub.cod)
                named.append(sub)
                names.extend(sub_names)
            return term.model_copy(update={"terms": tuple(named)}), names
    return term, list(outputs)


def _io_names(count: int, base: str) -> list[str]:
    return [base] if count == 1 else [f"{base}{i + 1}" for i in range(count)]


def check_interface(ctx: Context, produced: Sequence[ir.ArrayType],
                    consumed: Sequence[ir.ArrayType], span: ir.Span) -> None:
    """`f ; g` needs f's outputs to be g's inputs: same number, aligned by axis name."""
    if len(produced) != len(consumed):
        raise ctx.error("E303", f"the left side gives {len(produced)} arrays but the right side "
                        f"takes {len(consumed)}", span)
    for index, (a, b) in enumerate(zip(produced, consumed, strict=True)):
        if a.names != b.names or a.dtype != b.dtype or any(
                from_ir(x.size) != from_ir(y.size)
                for x, y in zip(a.shape.axes, b.shape.axes, strict=True)):
            raise ctx.error("E301", f"array {index + 1} does not align: the left side gives "
                            f"{a.text()} but the right side takes {b.text()}", span,
                            hint="in point-free form the arrays must match exactly, axis by axis")
