"""Rewrites of the ONNX file paddle2onnx converts, applied by ``deploy.to_onnx``.

paddle2onnx writes ``flatten(x, 1)`` as a shape computation (Shape, Slice, Concat, Reshape) and a Linear layer
as MatMul + Add on its [in, out] weight, where torch.onnx.export writes one Flatten and one Gemm on an [out, in]
weight: after its graph passes ONNX Runtime runs five operators where it could run two. The classifier head is
rewritten into those, so that ONNX Runtime runs the same operators for our export as for PyTorch's
(docs/performance.md). Written here because the ONNX simplifiers cannot fold a shape computation over a dynamic
batch dimension; every other operator is left as converted.
"""
from __future__ import annotations

import numpy as np


def simplify_head(path: str) -> dict:
    """Rewrite the file at ``path`` in place; returns {"Flatten": n, "Gemm": n}, the rewrites made."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    graph = model.graph
    constants = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    ranks = {info.name: len(info.type.tensor_type.shape.dim) for info in graph.value_info}
    made, nodes = {"Flatten": 0, "Gemm": 0}, []
    for node in graph.node:
        new = _as_flatten(node, producers, constants)
        if new is None:
            new = _as_gemm(node, producers, constants, ranks, graph)
        if new is not None:
            made[new.op_type] += 1
        node = new if new is not None else node
        if node.op_type == "Flatten":  # 2-D whatever shape inference could tell: a Gemm may take it
            ranks[node.output[0]] = 2
        elif node.op_type == "Identity" and node.input[0] in ranks:
            ranks[node.output[0]] = ranks[node.input[0]]
        nodes.append(node)
    if any(made.values()):
        graph.ClearField("value_info")  # inferred above; the rewritten graph would contradict some entries
        del graph.node[:]
        graph.node.extend(_live(nodes, {output.name for output in graph.output}))
        _drop_unused_initializers(graph)
        onnx.checker.check_model(model)
        onnx.save(model, path)
    return made


def _constant(name, constants):
    value = constants.get(name)
    return None if value is None else value.tolist()


def _as_flatten(node, producers, constants):
    """A Flatten(axis=1) for a Reshape of x to Concat(Slice(Shape(x), 0, 1), [-1]), else None."""
    import onnx

    if node.op_type != "Reshape":
        return None
    data, shape = node.input[0], node.input[1]
    concat = producers.get(shape)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 2:
        return None
    leading, rest = producers.get(concat.input[0]), _constant(concat.input[1], constants)
    if leading is None or leading.op_type != "Slice" or rest != [-1]:
        return None
    source = producers.get(leading.input[0])
    bounds = [_constant(name, constants) for name in leading.input[1:]]
    if source is None or source.op_type != "Shape" or source.input[0] != data or bounds[:2] != [[0], [1]]:
        return None
    if len(bounds) > 2 and bounds[2] != [0]:  # axes, when given
        return None
    return onnx.helper.make_node("Flatten", [data], list(node.output), name=node.name or None, axis=1)


def _as_gemm(node, producers, constants, ranks, graph):
    """A Gemm(a, weight transposed, bias, transB=1) for Add(MatMul(a, weight), bias) with a 2-D ``a``, a 2-D
    constant weight and a 1-D constant bias, else None; the transposed weight is added to the graph."""
    import onnx

    if node.op_type != "Add":
        return None
    matmul = producers.get(node.input[0])
    if matmul is None or matmul.op_type != "MatMul" or ranks.get(matmul.input[0]) != 2:
        return None
    weight, bias = constants.get(matmul.input[1]), constants.get(node.input[1])
    if weight is None or bias is None or weight.ndim != 2 or bias.shape != (weight.shape[1],):
        return None
    name = matmul.input[1] + ".transposed"
    graph.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(weight.T), name))
    return onnx.helper.make_node("Gemm", [matmul.input[0], name, node.input[1]], list(node.output),
                                 name=node.name or None, transB=1)


def _live(nodes, wanted):
    """The nodes whose outputs reach ``wanted`` (the graph's outputs), in their order."""
    kept = []
    for node in reversed(nodes):
        if wanted & set(node.output):
            kept.append(node)
            wanted |= set(node.input)
    return kept[::-1]


def _drop_unused_initializers(graph):
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
