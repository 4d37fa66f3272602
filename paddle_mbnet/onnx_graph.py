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
    """Rewrite the file at ``path`` in place; returns {"Flatten": n, "Gemm": n}, the rewrites made. Only the nodes
    a rewrite leaves unused (the shape computation, the MatMul) and their unused constants are removed."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    graph = model.graph
    constants = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    ranks = {info.name: len(info.type.tensor_type.shape.dim) for info in graph.value_info}
    made, nodes, replaced, transposed = {"Flatten": 0, "Gemm": 0}, [], [], {}
    for node in graph.node:
        new = _as_flatten(node, producers, constants)
        if new is None:
            new = _as_gemm(node, producers, constants, ranks, graph, transposed)
        if new is not None:
            made[new.op_type] += 1
            replaced.append(node)
        node = new if new is not None else node
        if node.op_type == "Flatten":  # 2-D whatever shape inference could tell: a Gemm may take it
            ranks[node.output[0]] = 2
        elif node.op_type == "Identity" and node.input[0] in ranks:
            ranks[node.output[0]] = ranks[node.input[0]]
        nodes.append(node)
    if any(made.values()):
        graph.ClearField("value_info")  # inferred above; the rewritten graph would contradict some entries
        kept, read_by_removed = _without_orphans(nodes, replaced, graph)
        del graph.node[:]
        graph.node.extend(kept)
        _drop_orphaned_initializers(graph, read_by_removed)
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
    if source is None or source.op_type != "Shape" or source.input[0] != data or source.attribute:
        return None  # a Shape with start/end attributes (opset 15) takes part of the shape only
    bounds = [_constant(name, constants) for name in leading.input[1:]]  # starts, ends[, axes[, steps]]
    if bounds[:2] != [[0], [1]] or bounds[2:3] not in ([], [[0]]) or bounds[3:4] not in ([], [[1]]):
        return None
    return onnx.helper.make_node("Flatten", [data], list(node.output), name=node.name or None, axis=1)


def _as_gemm(node, producers, constants, ranks, graph, transposed):
    """A Gemm(a, weight transposed, bias, transB=1) for Add(MatMul(a, weight), bias) with a 2-D ``a``, a 2-D
    constant weight and a 1-D constant bias of one value per output, else None; the transposed weight is added to
    the graph once per weight (``transposed``: weight name -> its name)."""
    import onnx

    if node.op_type != "Add":
        return None
    matmul = producers.get(node.input[0])
    if matmul is None or matmul.op_type != "MatMul" or ranks.get(matmul.input[0]) != 2:
        return None
    weight, bias = constants.get(matmul.input[1]), constants.get(node.input[1])
    if weight is None or bias is None or weight.ndim != 2 or bias.shape != (weight.shape[1],):
        return None
    if matmul.input[1] not in transposed:
        taken = set(constants) | {name for other in graph.node for name in (*other.input, *other.output)}
        name = matmul.input[1] + ".transposed"
        while name in taken:
            name += "_"
        graph.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(weight.T), name))
        transposed[matmul.input[1]] = name
    return onnx.helper.make_node("Gemm", [matmul.input[0], transposed[matmul.input[1]], node.input[1]],
                                 list(node.output), name=node.name or None, transB=1)


def _names_read(nodes, graph_outputs):
    """Every tensor name the ``nodes`` or their subgraphs (If, Loop, Scan) read, and the graph's outputs."""
    names = set(graph_outputs)
    for node in nodes:
        names.update(node.input)
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                names |= _names_read(subgraph.node, [output.name for output in subgraph.output])
    return names


def _without_orphans(nodes, replaced, graph):
    """(``nodes`` less those that fed only the replaced nodes, transitively: the shape computation, the MatMul;
    the names those removed nodes and the replaced ones read). Every other node stays, used or not."""
    outputs = [output.name for output in graph.output]
    producers = {name: index for index, node in enumerate(nodes) for name in node.output}
    removed, read_by_removed = set(), {name for node in replaced for name in node.input}
    candidates = sorted(read_by_removed)
    while candidates:
        index = producers.get(candidates.pop())
        if index is None or index in removed:
            continue
        remaining = [node for position, node in enumerate(nodes) if position not in removed and position != index]
        if set(nodes[index].output) & _names_read(remaining, outputs):
            continue
        removed.add(index)
        read_by_removed.update(nodes[index].input)
        candidates.extend(nodes[index].input)
    return [node for index, node in enumerate(nodes) if index not in removed], read_by_removed


def _drop_orphaned_initializers(graph, read_by_removed):
    """Drop the constants that only removed nodes read (the original weights, the Slice bounds)."""
    used = _names_read(graph.node, [output.name for output in graph.output])
    kept = [tensor for tensor in graph.initializer if tensor.name in used or tensor.name not in read_by_removed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
