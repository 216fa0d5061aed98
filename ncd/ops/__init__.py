"""Operator declarations: one per operator kind of the IR, read by every stage.

Each module here declares a family of operators. A declaration (`ncd.ops.declaration`) binds an
IR node type to its surface names and typing rules (elaboration), its glyph and caption (the
diagram), its overview label (the graphviz view), the default initialisation of the
parameters it reads, and its lowering (the PyTorch source it writes), with named places for
the facts that come next (reverse derivative, cost, symmetry). `ncd.operators` gathers them;
stages look a declaration up by the type of the IR node, never by a string.

The package itself imports nothing, so that `ncd.ir` can read the elementwise functions from
`ncd.ops.functions` (a leaf module) without importing the declarations.
"""
