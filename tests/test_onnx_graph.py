"""onnx_graph.simplify_head on small hand-built graphs: the two patterns paddle2onnx writes are rewritten, the
result computes the same, and near misses are left alone."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx comes with the optional ONNX engine (pip install paddle2onnx)")
ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is an optional engine (pip install onnxruntime)")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from paddle_mbnet.onnx_graph import simplify_head  # noqa: E402


def _head(path, slice_end=1, flatten_rank=2, bias_size=3):
    """x [N, 4, 1, 1] -> flatten(x, 1) as paddle2onnx writes it -> MatMul(w [4, 3]) -> Add(b) -> y."""
    rng = np.random.RandomState(0)
    constants = {"starts": [0], "ends": [slice_end], "axes": [0], "minus_one": [-1]}
    initializers = [numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in constants.items()]
    initializers += [numpy_helper.from_array(rng.randn(4, 3).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.randn(bias_size).astype(np.float32), "b")]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "starts", "ends", "axes"], ["leading"]),
             helper.make_node("Concat", ["leading", "minus_one"], ["new_shape"], axis=0),
             helper.make_node("Reshape", ["x", "new_shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["product"]),
             helper.make_node("Add", ["product", "b"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph(nodes, "head", [x], [y], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def _run(path, x):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_the_head_becomes_flatten_and_gemm_and_computes_the_same(tmp_path):
    path = _head(tmp_path / "head.onnx")
    x = np.random.RandomState(1).randn(5, 4, 1, 1).astype(np.float32)
    want = _run(path, x)
    assert simplify_head(path) == {"Flatten": 1, "Gemm": 1}
    model = onnx.load(path)
    assert [node.op_type for node in model.graph.node] == ["Flatten", "Gemm"]
    assert {tensor.name for tensor in model.graph.initializer} == {"w.transposed", "b"}  # the rest was dropped
    np.testing.assert_allclose(_run(path, x), want, rtol=1e-6, atol=1e-6)


def test_a_reshape_that_is_not_flatten_from_axis_1_is_left_alone(tmp_path):
    """Keeping two leading dims makes [N, 4, 1] here: 3-D, so the MatMul cannot become a Gemm either."""
    path = _head(tmp_path / "head.onnx", slice_end=2)
    before = onnx.load(path)
    assert simplify_head(path) == {"Flatten": 0, "Gemm": 0}
    assert onnx.load(path) == before  # the file is not rewritten


def test_an_add_that_is_not_a_bias_is_left_alone(tmp_path):
    """A bias of the wrong length (broadcast over rows instead of columns) is no Gemm's C; the flatten still is."""
    path = _head(tmp_path / "head.onnx", bias_size=1)
    x = np.random.RandomState(1).randn(2, 4, 1, 1).astype(np.float32)
    want = _run(path, x)
    assert simplify_head(path) == {"Flatten": 1, "Gemm": 0}
    assert [node.op_type for node in onnx.load(path).graph.node] == ["Flatten", "MatMul", "Add"]
    np.testing.assert_allclose(_run(path, x), want, rtol=1e-6, atol=1e-6)
