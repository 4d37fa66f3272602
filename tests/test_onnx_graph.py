"""onnx_graph.simplify_head on small hand-built graphs: the two patterns paddle2onnx writes are rewritten, the
result computes the same, and near misses are left alone."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx comes with the optional ONNX engine (pip install paddle2onnx)")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from paddle_mbnet.onnx_graph import simplify_head  # noqa: E402


def _head(path, slice_bounds=(0, 1, 0), bias_size=3, heads=1, shape_attributes=None, opset=13, extra_nodes=()):
    """x [N, 4, 1, 1] -> flatten(x, 1) as paddle2onnx writes it -> MatMul(w [4, 3]) -> Add(b) -> y0 (and y1 ...
    through the same weight when ``heads`` > 1)."""
    rng = np.random.RandomState(0)
    constants = dict(zip(("starts", "ends", "axes", "steps"), ([bound] for bound in slice_bounds)), minus_one=[-1])
    initializers = [numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in constants.items()]
    initializers += [numpy_helper.from_array(rng.randn(4, 3).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.randn(bias_size).astype(np.float32), "b")]
    slice_inputs = ["shape", "starts", "ends", "axes", "steps"][:1 + len(slice_bounds)]
    nodes = [helper.make_node("Shape", ["x"], ["shape"], **(shape_attributes or {})),
             helper.make_node("Slice", slice_inputs, ["leading"]),
             helper.make_node("Concat", ["leading", "minus_one"], ["new_shape"], axis=0),
             helper.make_node("Reshape", ["x", "new_shape"], ["flat"]), *extra_nodes]
    for head in range(heads):
        nodes += [helper.make_node("MatMul", ["flat", "w"], [f"product{head}"]),
                  helper.make_node("Add", [f"product{head}", "b"], [f"y{head}"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 1, 1])
    ys = [helper.make_tensor_value_info(f"y{head}", TensorProto.FLOAT, ["N", 3]) for head in range(heads)]
    graph = helper.make_graph(nodes, "head", [x], ys, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return str(path)


def _run(path, x):
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is an optional engine (pip install onnxruntime)")
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _same_outputs_after_rewrite(path, made):
    x = np.random.RandomState(1).randn(5, 4, 1, 1).astype(np.float32)
    want = _run(path, x)
    assert simplify_head(path) == made
    for got, expected in zip(_run(path, x), want):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    return onnx.load(path)


def test_the_head_becomes_flatten_and_gemm_and_computes_the_same(tmp_path):
    model = _same_outputs_after_rewrite(_head(tmp_path / "head.onnx"), {"Flatten": 1, "Gemm": 1})
    assert [node.op_type for node in model.graph.node] == ["Flatten", "Gemm"]
    assert {tensor.name for tensor in model.graph.initializer} == {"w.transposed", "b"}  # the rest was dropped


def test_a_weight_shared_by_two_heads_is_transposed_once(tmp_path):
    model = _same_outputs_after_rewrite(_head(tmp_path / "head.onnx", heads=2), {"Flatten": 1, "Gemm": 2})
    assert [node.op_type for node in model.graph.node] == ["Flatten", "Gemm", "Gemm"]
    assert sorted(tensor.name for tensor in model.graph.initializer) == ["b", "w.transposed"]


def test_nodes_the_rewrite_did_not_orphan_stay(tmp_path):
    """An unused node of the converted graph is none of the rewrite's business."""
    unused = helper.make_node("Relu", ["x"], ["unused"])
    model = _same_outputs_after_rewrite(_head(tmp_path / "head.onnx", extra_nodes=[unused]),
                                        {"Flatten": 1, "Gemm": 1})
    assert [node.op_type for node in model.graph.node] == ["Flatten", "Relu", "Gemm"]


@pytest.mark.parametrize("near_miss, gemms", [
    ({"slice_bounds": (0, 2, 0)}, 0),  # keeps two leading dims: [N, 4, 1], not flatten(x, 1), not 2-D
    ({"slice_bounds": (0, 1, 0, -1)}, 0),  # a backward step: an empty slice, a 1-D result
    ({"shape_attributes": {"start": 1}, "opset": 15}, 1),  # Shape of the trailing dims only: [4, N], still 2-D
])
def test_a_reshape_that_is_not_flatten_from_axis_1_is_left_alone(tmp_path, near_miss, gemms):
    """No Flatten; the MatMul + Add becomes a Gemm only where shape inference knows its input is 2-D."""
    path = _head(tmp_path / "head.onnx", **near_miss)
    before = onnx.load(path)
    assert simplify_head(path) == {"Flatten": 0, "Gemm": gemms}
    model = onnx.load(path)
    if gemms:
        assert [node.op_type for node in model.graph.node] == ["Shape", "Slice", "Concat", "Reshape", "Gemm"]
    else:
        assert model == before  # the file is not rewritten


def test_an_add_of_one_value_is_not_taken_for_a_bias(tmp_path):
    """A one-value addend is a valid Gemm C by broadcasting, but not the per-output bias of a Linear layer that the
    rewrite looks for: it stays a MatMul + Add; the flatten is still rewritten."""
    model = _same_outputs_after_rewrite(_head(tmp_path / "head.onnx", bias_size=1), {"Flatten": 1, "Gemm": 0})
    assert [node.op_type for node in model.graph.node] == ["Flatten", "MatMul", "Add"]
