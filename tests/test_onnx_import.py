"""ONNX import: hand-built one-op models vs onnxruntime, torch-exported models
vs torch and onnxruntime, IR -> ONNX -> IR round trips, the unsupported-ops
report, dynamic shape inputs, and external-data safety."""
import io
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import irtool
from irtool.errors import FileFormatError, UnsupportedError

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(0)


def f32(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def pos(*shape):
    return f32(*shape, low=0.2, high=2.0)


def i64(*values):
    return np.array(values, dtype=np.int64)


class K:
    """A node input given as an initializer (constant), not a graph input."""

    def __init__(self, value):
        self.value = np.asarray(value)


def one_op_model(op, ins, attrs=None, opset=17, nout=1):
    """Model with one `op` node; `ins` holds arrays (graph inputs), K(array)
    (initializers) or None (omitted optional input). Returns (model, feeds)."""
    names, graph_inputs, inits, feeds = [], [], [], {}
    for i, v in enumerate(ins):
        if v is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        if isinstance(v, K):
            inits.append(numpy_helper.from_array(v.value, name))
        else:
            v = np.asarray(v)
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
            feeds[name] = v
    outs = [f"out{i}" for i in range(nout)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    graph = helper.make_graph([node], "one_op", graph_inputs, [onnx.ValueInfoProto(name=o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model, feeds


def run_ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_same(got, want, rtol=1e-5, atol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, f"{g.dtype}{g.shape} != {w.dtype}{w.shape}"
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def check_vs_ort(model, feeds, **tol):
    graph = irtool.import_onnx(model)
    irtool.verify(graph)
    assert_same(irtool.run(graph, feeds), run_ort(model, feeds), **tol)
    return graph


x23, x234, img = f32(2, 3), f32(2, 3, 4), f32(2, 3, 6, 6)

# (id, op, inputs, attrs, opset, nout)
CASES = [
    # elementwise
    *[(op, op, [x234], {}, 17, 1) for op in ("Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "Erf", "Sin",
                                             "Cos", "Floor", "Ceil", "HardSwish", "Softplus", "Selu", "Elu")],
    *[(op, op, [pos(2, 3, 4)], {}, 17, 1) for op in ("Sqrt", "Log", "Reciprocal")],
    ("leaky_relu", "LeakyRelu", [x234], {"alpha": 0.2}, 17, 1),
    ("prelu", "PRelu", [x234, K(f32(3, 1))], {}, 17, 1),
    ("hardsigmoid", "HardSigmoid", [x234], {"alpha": 0.3, "beta": 0.4}, 17, 1),
    ("elu_alpha", "Elu", [x234], {"alpha": 0.5}, 17, 1),
    ("gelu", "Gelu", [x234], {}, 20, 1),
    ("gelu_tanh", "Gelu", [x234], {"approximate": "tanh"}, 20, 1),
    *[(op, op, [x234, f32(3, 4)], {}, 17, 1) for op in ("Add", "Sub", "Mul")],
    ("div", "Div", [x234, pos(4)], {}, 17, 1),
    ("pow", "Pow", [pos(2, 3), f32(2, 3)], {}, 17, 1),
    ("pow_int_exponent", "Pow", [x23, K(i64(2))], {}, 17, 1),
    ("min", "Min", [x23, f32(3), f32(2, 1)], {}, 17, 1),
    ("max", "Max", [x23, f32(3), f32(2, 1)], {}, 17, 1),
    ("sum", "Sum", [x23, f32(3), f32(2, 1)], {}, 17, 1),
    ("mean", "Mean", [x23, f32(3), f32(2, 1)], {}, 17, 1),
    *[(op, op, [x23, f32(3)], {}, 17, 1) for op in ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual")],
    ("not", "Not", [x23 > 0], {}, 17, 1),
    ("and", "And", [x23 > 0, f32(3) > 0], {}, 17, 1),
    ("or", "Or", [x23 > 0, f32(3) > 0], {}, 17, 1),
    ("where", "Where", [x23 > 0, x23, f32(3)], {}, 17, 1),
    ("cast", "Cast", [x23 * 3], {"to": TensorProto.INT32}, 17, 1),
    ("castlike", "CastLike", [x23, K(np.zeros(1, np.float64))], {}, 17, 1),
    ("clip_inputs", "Clip", [x234, K(np.float32(-0.5)), K(np.float32(0.7))], {}, 13, 1),
    ("clip_min_only", "Clip", [x234, K(np.float32(-0.5))], {}, 13, 1),
    ("clip_dynamic", "Clip", [x234, np.float32(-0.5), np.float32(0.7)], {}, 13, 1),
    ("clip_attrs", "Clip", [x234], {"min": -0.5, "max": 0.7}, 7, 1),
    # matmul family
    ("matmul", "MatMul", [x234, f32(4, 5)], {}, 17, 1),
    ("gemm_linear", "Gemm", [x23, K(f32(5, 3)), K(f32(5))], {"transB": 1}, 17, 1),
    ("gemm_general", "Gemm", [f32(3, 2), K(f32(3, 5)), K(f32(2, 5))], {"transA": 1, "alpha": 0.5, "beta": 2.0}, 17, 1),
    ("gemm_no_c", "Gemm", [x23, f32(3, 4)], {}, 17, 1),
    ("einsum_matmul", "Einsum", [x234, f32(4, 5)], {"equation": "bij,jk->bik"}, 17, 1),
    ("einsum_batch", "Einsum", [f32(2, 3, 4), f32(2, 4, 5)], {"equation": "bij,bjk->bik"}, 17, 1),
    ("einsum_attn", "Einsum", [f32(2, 3, 5, 4), f32(2, 3, 6, 4)], {"equation": "bhqd,bhkd->bhqk"}, 17, 1),
    ("einsum_transpose", "Einsum", [x234], {"equation": "ijk->kji"}, 17, 1),
    ("einsum_reduce", "Einsum", [x234], {"equation": "ijk->j"}, 17, 1),
    ("einsum_outer", "Einsum", [f32(3), f32(4)], {"equation": "i,j->ij"}, 17, 1),
    ("einsum_dot", "Einsum", [f32(5), f32(5)], {"equation": "i,i"}, 17, 1),
    ("einsum_ellipsis", "Einsum", [f32(2, 3, 4), f32(4, 5)], {"equation": "...j,jk->...k"}, 17, 1),
    ("einsum_three", "Einsum", [f32(2, 3), f32(3, 4), f32(4, 5)], {"equation": "ij,jk,kl->il"}, 17, 1),
    ("einsum_trace", "Einsum", [f32(4, 4)], {"equation": "ii->"}, 17, 1),
    # softmax family and normalisation
    ("softmax", "Softmax", [x234], {}, 17, 1),
    ("softmax_axis1", "Softmax", [x234], {"axis": 1}, 17, 1),
    ("softmax_opset11", "Softmax", [x234], {"axis": 1}, 11, 1),
    ("log_softmax", "LogSoftmax", [x234], {"axis": 0}, 17, 1),
    ("log_softmax_opset11", "LogSoftmax", [x234], {}, 11, 1),
    ("batchnorm", "BatchNormalization", [img, K(f32(3)), K(f32(3)), K(f32(3)), K(pos(3))], {"epsilon": 1e-3}, 15, 1),
    ("instancenorm", "InstanceNormalization", [img, K(f32(3)), K(f32(3))], {}, 17, 1),
    ("layernorm", "LayerNormalization", [x234, K(f32(4)), K(f32(4))], {}, 17, 1),
    ("layernorm_axis", "LayerNormalization", [x234, K(f32(3, 4))], {"axis": 1, "epsilon": 1e-3}, 17, 1),
    ("layernorm_stats", "LayerNormalization", [x234, K(f32(4)), K(f32(4))], {}, 17, 3),
    ("lrn", "LRN", [img], {"size": 3, "alpha": 1e-3, "beta": 0.75, "bias": 1.5}, 17, 1),
    # conv and pooling
    ("conv", "Conv", [img, K(f32(4, 3, 3, 3)), K(f32(4))], {"pads": [1, 1, 1, 1]}, 17, 1),
    ("conv_strided_group", "Conv", [f32(1, 4, 7, 7), K(f32(4, 2, 3, 3))], {"strides": [2, 2], "group": 2, "dilations": [1, 2]}, 17, 1),
    ("conv_same_upper", "Conv", [f32(1, 2, 7, 7), K(f32(3, 2, 2, 2))], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 17, 1),
    ("conv_same_lower", "Conv", [f32(1, 2, 7, 7), K(f32(3, 2, 2, 2))], {"auto_pad": "SAME_LOWER"}, 17, 1),
    ("conv1d", "Conv", [f32(2, 3, 9), K(f32(4, 3, 3))], {"pads": [1, 2]}, 17, 1),
    ("conv_transpose", "ConvTranspose", [img, K(f32(3, 2, 3, 3)), K(f32(2))], {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, 17, 1),
    ("conv_transpose_output_shape", "ConvTranspose", [f32(1, 2, 3, 3), K(f32(2, 2, 3, 3))], {"strides": [2, 2], "output_shape": [7, 8]}, 17, 1),
    ("maxpool", "MaxPool", [img], {"kernel_shape": [2, 2], "strides": [2, 2]}, 17, 1),
    ("maxpool_pads_ceil", "MaxPool", [f32(1, 2, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}, 17, 1),
    ("maxpool_indices", "MaxPool", [f32(2, 3, 5, 5)], {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 0, 0]}, 17, 2),
    ("maxpool_indices_col", "MaxPool", [f32(1, 2, 4, 6)], {"kernel_shape": [2, 3], "storage_order": 1}, 17, 2),
    ("maxpool_same", "MaxPool", [f32(1, 2, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, 17, 1),
    ("avgpool", "AveragePool", [img], {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}, 17, 1),
    ("avgpool_include_pad", "AveragePool", [img], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, 17, 1),
    ("avgpool_dilated", "AveragePool", [f32(1, 2, 8, 8)], {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}, 19, 1),
    ("global_avg", "GlobalAveragePool", [img], {}, 17, 1),
    ("global_max", "GlobalMaxPool", [img], {}, 17, 1),
    # shape ops
    ("reshape", "Reshape", [x234, K(i64(4, -1))], {}, 17, 1),
    ("reshape_zero", "Reshape", [x234, K(i64(0, 0, 2, 2))], {}, 17, 1),
    ("transpose", "Transpose", [x234], {"perm": [2, 0, 1]}, 17, 1),
    ("transpose_default", "Transpose", [x234], {}, 17, 1),
    ("flatten", "Flatten", [x234], {"axis": 2}, 17, 1),
    ("flatten_zero", "Flatten", [x234], {"axis": 0}, 17, 1),
    ("squeeze", "Squeeze", [f32(2, 1, 3, 1), K(i64(1))], {}, 17, 1),
    ("squeeze_all", "Squeeze", [f32(2, 1, 3, 1)], {}, 17, 1),
    ("squeeze_opset11", "Squeeze", [f32(2, 1, 3, 1)], {"axes": [-1]}, 11, 1),
    ("unsqueeze", "Unsqueeze", [x23, K(i64(0, -1))], {}, 17, 1),
    ("unsqueeze_opset11", "Unsqueeze", [x23], {"axes": [1]}, 11, 1),
    ("concat", "Concat", [x23, f32(2, 5)], {"axis": -1}, 17, 1),
    ("split_sizes", "Split", [f32(2, 6), K(i64(2, 4))], {"axis": 1}, 17, 2),
    ("split_even", "Split", [f32(6, 2)], {}, 17, 3),
    ("split_num_outputs", "Split", [f32(2, 7)], {"axis": 1, "num_outputs": 3}, 18, 3),
    ("split_opset11", "Split", [f32(2, 6)], {"axis": 1, "split": [1, 5]}, 11, 2),
    ("slice", "Slice", [f32(5, 6), K(i64(1, -1)), K(i64(4, -6)), K(i64(0, 1)), K(i64(2, -2))], {}, 17, 1),
    ("slice_to_end", "Slice", [f32(5, 6), K(i64(2)), K(i64(2 ** 63 - 1)), K(i64(1))], {}, 17, 1),
    ("pad_constant", "Pad", [x23, K(i64(1, 0, 2, 3)), K(np.float32(1.5))], {}, 17, 1),
    ("pad_reflect", "Pad", [f32(3, 4), K(i64(1, 2, 1, 1))], {"mode": "reflect"}, 17, 1),
    ("pad_edge_axes", "Pad", [f32(3, 4), K(i64(2, 1)), None, K(i64(1))], {"mode": "edge"}, 18, 1),
    ("pad_wrap", "Pad", [f32(3, 4), K(i64(1, 2, 2, 1))], {"mode": "wrap"}, 19, 1),
    ("gather", "Gather", [f32(5, 3), K(i64(0, 4, -1))], {}, 17, 1),
    ("gather_axis1", "Gather", [x234, np.array([[2, 0]], np.int64)], {"axis": 1}, 17, 1),
    ("gather_elements", "GatherElements", [f32(3, 4), np.array([[0, 3], [-1, 1], [2, 2]], np.int64)], {"axis": 1}, 17, 1),
    ("scatter_elements", "ScatterElements", [f32(3, 4), K(np.array([[1, 0], [3, 2]], np.int64)), f32(2, 2)], {"axis": 1}, 17, 1),
    ("scatter_elements_add", "ScatterElements", [f32(3, 4), K(np.array([[1, 1], [3, 2]], np.int64)), f32(2, 2)], {"axis": 1, "reduction": "add"}, 17, 1),
    ("expand", "Expand", [f32(3, 1), K(i64(2, 1, 4))], {}, 17, 1),
    ("tile", "Tile", [x23, K(i64(2, 3))], {}, 17, 1),
    ("shape", "Shape", [x234], {}, 17, 1),
    ("shape_slice", "Shape", [x234], {"start": 1, "end": -1}, 17, 1),
    ("size", "Size", [x234], {}, 17, 1),
    ("constant_of_shape", "ConstantOfShape", [K(i64(2, 3))], {"value": helper.make_tensor("v", TensorProto.INT32, [1], [7])}, 17, 1),
    ("range", "Range", [K(np.float32(1.0)), K(np.float32(4.0)), K(np.float32(0.5))], {}, 17, 1),
    ("range_int", "Range", [K(np.int64(10)), K(np.int64(2)), K(np.int64(-3))], {}, 17, 1),
    # reductions
    ("reduce_sum", "ReduceSum", [x234, K(i64(1))], {}, 17, 1),
    ("reduce_sum_all", "ReduceSum", [x234], {"keepdims": 0}, 17, 1),
    ("reduce_sum_noop", "ReduceSum", [x234], {"noop_with_empty_axes": 1}, 17, 1),
    ("reduce_sum_opset11", "ReduceSum", [x234], {"axes": [0, 2]}, 11, 1),
    ("reduce_mean", "ReduceMean", [x234, K(i64(-1))], {"keepdims": 0}, 18, 1),
    ("reduce_mean_opset17", "ReduceMean", [x234], {"axes": [1]}, 17, 1),
    ("reduce_max", "ReduceMax", [x234, K(i64(0, 2))], {}, 18, 1),
    ("reduce_min", "ReduceMin", [x234], {"axes": [1], "keepdims": 0}, 13, 1),
    ("reduce_prod", "ReduceProd", [x234, K(i64(2))], {}, 18, 1),
    ("reduce_l2", "ReduceL2", [x234, K(i64(1))], {}, 18, 1),
    ("reduce_l2_opset13", "ReduceL2", [x234], {"axes": [2], "keepdims": 0}, 13, 1),
    ("reduce_log_sum_exp", "ReduceLogSumExp", [x234, K(i64(1))], {}, 18, 1),
    ("argmax", "ArgMax", [x234], {"axis": 1}, 17, 1),
    ("argmin_last", "ArgMin", [np.array([[1, 0, 0, 2], [3, 3, 1, 1]], np.float32)], {"axis": 1, "keepdims": 0, "select_last_index": 1}, 17, 1),
    ("cumsum", "CumSum", [x234, K(np.int64(1))], {}, 17, 1),
    ("cumsum_rev_excl", "CumSum", [x234, K(np.int64(-1))], {"exclusive": 1, "reverse": 1}, 17, 1),
    ("topk", "TopK", [f32(3, 5), K(i64(2))], {}, 17, 2),
    ("topk_smallest", "TopK", [f32(4, 3), K(i64(3))], {"axis": 0, "largest": 0}, 17, 2),
    # resize
    ("resize_nearest", "Resize", [img, None, K(np.array([1, 1, 2, 2], np.float32))], {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, 17, 1),
    ("resize_nearest_default", "Resize", [img, None, None, K(i64(2, 3, 9, 4))], {}, 17, 1),
    ("resize_linear", "Resize", [img, None, K(np.array([1, 1, 2, 1.5], np.float32))], {"mode": "linear"}, 17, 1),
    ("resize_linear_align", "Resize", [img, None, None, K(i64(2, 3, 4, 9))], {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, 17, 1),
    ("resize_cubic", "Resize", [img, None, None, K(i64(2, 3, 8, 5))], {"mode": "cubic"}, 17, 1),
    # composed from primitives (beyond the required list)
    ("lp_norm", "LpNormalization", [x234], {"axis": 1, "p": 1}, 17, 1),
    ("lp_norm_l2", "LpNormalization", [x234], {}, 17, 1),
    ("lp_pool", "LpPool", [img], {"kernel_shape": [2, 2], "p": 3, "pads": [1, 1, 1, 1]}, 18, 1),
    ("eye_like", "EyeLike", [f32(3, 4)], {"k": 1}, 17, 1),
    ("asinh", "Asinh", [x234], {}, 17, 1),
    ("atanh", "Atanh", [f32(2, 3, low=-0.9, high=0.9)], {}, 17, 1),
    ("gather_nd", "GatherND", [f32(3, 4, 2), np.array([[0, 1], [2, -1]], np.int64)], {}, 17, 1),
    ("gather_nd_batch", "GatherND", [f32(2, 3, 4), np.array([[1], [2]], np.int64)], {"batch_dims": 1}, 17, 1),
    ("scatter_nd", "ScatterND", [f32(4, 3), K(np.array([[1], [3]], np.int64)), f32(2, 3)], {}, 17, 1),
    ("scatter_nd_add", "ScatterND", [f32(4, 3), K(np.array([[1, 2], [1, 2]], np.int64)), f32(2)], {"reduction": "add"}, 17, 1),
    ("scatter_elements_max", "ScatterElements", [f32(3, 4), K(np.array([[1, 1], [3, 2]], np.int64)), f32(2, 2)], {"axis": 1, "reduction": "max"}, 18, 1),
    ("quantize", "QuantizeLinear", [f32(2, 3, 4) * 50, K(np.float32(0.5)), K(np.uint8(128))], {}, 19, 1),
    ("quantize_axis", "QuantizeLinear", [f32(2, 3, 4) * 50, K(np.float32([0.5, 1, 2])), K(np.int8([0, 1, -1]))], {"axis": 1}, 19, 1),
    ("dequantize", "DequantizeLinear", [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), K(np.float32(0.5)), K(np.uint8(10))], {}, 19, 1),
    ("nll_loss", "NegativeLogLikelihoodLoss", [f32(3, 5), np.array([1, 0, 4], np.int64), K(pos(5))], {}, 17, 1),
    ("nll_loss_ignore", "NegativeLogLikelihoodLoss", [f32(3, 5, 2), np.array([[1, 0], [4, 2], [2, 2]], np.int64)], {"ignore_index": 2, "reduction": "sum"}, 17, 1),
    ("softmax_ce", "SoftmaxCrossEntropyLoss", [f32(3, 5), np.array([1, 0, 4], np.int64)], {"reduction": "none"}, 17, 2),
    ("mish", "Mish", [x234], {}, 18, 1),
    ("trilu", "Trilu", [f32(2, 4, 5), K(np.int64(1))], {"upper": 0}, 17, 1),
    ("one_hot", "OneHot", [np.array([[0, 3], [-1, 2]], np.int64), K(np.int64(4)), K(np.float32([0.5, 2]))], {"axis": 1}, 17, 1),
    ("depth_to_space", "DepthToSpace", [f32(1, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"}, 17, 1),
    ("space_to_depth", "SpaceToDepth", [f32(1, 2, 4, 6)], {"blocksize": 2}, 17, 1),
    ("hardmax", "Hardmax", [x234], {"axis": 1}, 17, 1),
    ("attention_causal", "Attention", [f32(2, 3, 5, 4), f32(2, 3, 6, 4), f32(2, 3, 6, 4)], {"is_causal": 1}, 23, 1),
    ("attention_bool_mask", "Attention", [f32(2, 3, 5, 4), f32(2, 3, 6, 4), f32(2, 3, 6, 4), RNG.random((5, 6)) > 0.3], {}, 23, 1),
    ("attention_3d_gqa", "Attention", [f32(2, 5, 8), f32(2, 6, 4), f32(2, 6, 4)], {"q_num_heads": 4, "kv_num_heads": 2}, 23, 1),
    ("attention_past", "Attention", [f32(1, 2, 3, 4), f32(1, 2, 3, 4), f32(1, 2, 3, 4), None, f32(1, 2, 2, 4), f32(1, 2, 2, 4)], {"is_causal": 1}, 23, 3),
    ("rms_norm", "RMSNormalization", [x234, K(f32(4))], {"epsilon": 1e-3}, 23, 1),
    ("rotary_embedding", "RotaryEmbedding", [f32(1, 3, 2, 4), K(f32(4, 2)), K(f32(4, 2)), K(np.array([[0, 3]], np.int64))], {}, 23, 1),
    # no table entry: imported through the function body ONNX defines for them
    ("hann_window_function", "HannWindow", [K(np.int64(10))], {"periodic": 0}, 17, 1),
    ("dynamic_quantize_function", "DynamicQuantizeLinear", [f32(3, 4)], {}, 17, 3),
    ("affine_grid_function", "AffineGrid", [f32(2, 2, 3), K(i64(2, 1, 4, 5))], {"align_corners": 1}, 20, 1),
    # misc
    ("identity", "Identity", [x23], {}, 17, 1),
    ("dropout", "Dropout", [x23], {}, 17, 1),
    ("dropout_mask", "Dropout", [x23, K(np.float32(0.3))], {}, 17, 2),
    ("constant", "Constant", [], {"value": helper.make_tensor("c", TensorProto.FLOAT, [2], [1.5, -2.0])}, 17, 1),
    ("constant_ints", "Constant", [], {"value_ints": [3, 1, 2]}, 17, 1),
]


@pytest.mark.parametrize("op,ins,attrs,opset,nout", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_one_op_vs_onnxruntime(op, ins, attrs, opset, nout):
    model, feeds = one_op_model(op, ins, attrs, opset, nout)
    check_vs_ort(model, feeds, rtol=1e-4, atol=1e-5)


def test_case_list_covers_the_required_ops():
    required = """Conv ConvTranspose MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization
    InstanceNormalization LayerNormalization Relu LeakyRelu PRelu Elu Selu Sigmoid HardSigmoid HardSwish Softplus
    Tanh Gelu Softmax LogSoftmax Gemm MatMul Einsum Add Sub Mul Div Pow Sqrt Exp Log Erf Neg Abs Reciprocal Floor
    Ceil Sin Cos Min Max Sum Mean Reshape Transpose Flatten Squeeze Unsqueeze Concat Split Slice Gather
    GatherElements ScatterElements Expand Tile Pad Shape Size ConstantOfShape Range Where Equal Less LessOrEqual
    Greater GreaterOrEqual Not And Or Cast CastLike Clip ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd
    ReduceL2 ArgMax ArgMin CumSum TopK Resize Dropout Identity Constant LRN""".split()
    tested = {c[1] for c in CASES}
    assert not set(required) - tested


# -- graph structure -------------------------------------------------------------

def _mlp_model(dims=("batch", 4)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(f32(3, 4), "fc.weight")
    bias = numpy_helper.from_array(f32(3), "fc.bias")
    shape = numpy_helper.from_array(i64(-1, 3), "shape")
    nodes = [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [x], [y], [w, bias, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_symbolic_dims_names_params_and_outputs():
    model = _mlp_model()
    g = irtool.import_onnx(model)
    assert [v.name for v in g.inputs] == ["x"] and g.inputs[0].shape == ("batch", 4)
    assert [v.name for v in g.outputs] == ["y"]
    assert set(g.params) == {"fc.weight", "fc.bias"}        # the shape initializer is folded away
    assert all(p.trainable for p in g.params.values())
    assert {n.outputs[0].name for n in g.nodes} == {"h", "y"}    # the no-op Reshape is elided
    for batch in (1, 5):
        feeds = {"x": f32(batch, 4)}
        assert_same(irtool.run(g, feeds), run_ort(model, feeds))


def test_unknown_dims_get_generated_names():
    model = _mlp_model(dims=(None, 4))
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    g = irtool.import_onnx(model)
    assert g.inputs[0].shape == ("unk0", 4)
    assert irtool.run(g, {"x": f32(3, 4)})[0].shape == (3, 3)


def test_accepts_path_bytes_and_model(tmp_path):
    model = _mlp_model(dims=(2, 4))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    feeds = {"x": f32(2, 4)}
    want = run_ort(model, feeds)
    for src in (model, model.SerializeToString(), str(path), path):
        assert_same(irtool.run(irtool.import_onnx(src), feeds), want)


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe not a protobuf \x00" * 10)
    with pytest.raises(FileFormatError):
        irtool.import_onnx(str(bad))
    with pytest.raises(FileFormatError):
        irtool.import_onnx(str(tmp_path / "missing.onnx"))


def test_identity_output_keeps_graph_output():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Dropout", ["a"], ["b"]),
             helper.make_node("Neg", ["b"], ["y"])]
    outs = [onnx.ValueInfoProto(name="b"), onnx.ValueInfoProto(name="y")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs),
                              opset_imports=[helper.make_opsetid("", 17)])
    g = irtool.import_onnx(model)
    assert g.outputs[0] is g.inputs[0] and g.outputs[1].name == "y"
    feeds = {"x": x23}
    assert_same(irtool.run(g, feeds), run_ort(model, feeds))


def test_shape_arithmetic_is_folded_with_symbolic_dims():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape on a dynamic batch."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
             helper.make_node("Unsqueeze", ["d0", "axes0"], ["d0u"]),
             helper.make_node("Shape", ["x"], ["s2"], start=1),
             helper.make_node("ReduceProd", ["s2"], ["rest"], keepdims=1),
             helper.make_node("Concat", ["d0u", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["flat"]),
             helper.make_node("ConstantOfShape", ["target"], ["ones"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("Add", ["flat", "ones"], ["y"])]
    inits = [numpy_helper.from_array(np.int64(0), "zero"), numpy_helper.from_array(i64(0), "axes0")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [onnx.ValueInfoProto(name="y")], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    g = irtool.import_onnx(model)
    assert g.outputs[0].shape == ("n", 12)
    assert "shape_of" not in g.op_histogram() and not g.params
    for n in (1, 3):
        feeds = {"x": f32(n, 3, 4)}
        assert_same(irtool.run(g, feeds), run_ort(model, feeds))


def test_symbolic_range_and_slice_bounds():
    """Range(0, n) and Slice(x, 1, n) where n = Shape(x)[0] is a symbolic dim."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    nodes = [helper.make_node("Shape", ["x"], ["s"], end=1),
             helper.make_node("Squeeze", ["s", "axes0"], ["n"]),
             helper.make_node("Range", ["zero", "n", "one"], ["r"]),
             helper.make_node("Slice", ["x", "one1", "s", "axes0"], ["tail"]),
             helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT)]
    inits = [numpy_helper.from_array(np.int64(0), "zero"), numpy_helper.from_array(np.int64(1), "one"),
             numpy_helper.from_array(i64(1), "one1"), numpy_helper.from_array(i64(0), "axes0")]
    outs = [onnx.ValueInfoProto(name="rf"), onnx.ValueInfoProto(name="tail")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    g = irtool.import_onnx(model)
    assert g.outputs[0].shape == ("n",)
    for n in (2, 5):
        feeds = {"x": f32(n, 4)}
        assert_same(irtool.run(g, feeds), run_ort(model, feeds))


def _if_model(cond_value=None):
    """y = If(cond, then: x * 2 + c (branch initializer), else: -x)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "c"], ["then_out"])],
        "then", [], [onnx.ValueInfoProto(name="then_out")],
        [numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(f32(3), "c")])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["else_out"])], "else", [],
                               [onnx.ValueInfoProto(name="else_out")])
    inputs, inits = [x], []
    if cond_value is None:
        inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    else:
        inits.append(numpy_helper.from_array(np.array(cond_value), "cond"))
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)
    return helper.make_model(helper.make_graph([node], "g", inputs, [onnx.ValueInfoProto(name="y")], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_constant_condition_is_inlined(cond):
    model = _if_model(cond)
    g = check_vs_ort(model, {"x": x23})
    assert [v.name for v in g.outputs] == ["y"]


def test_if_with_runtime_condition_is_reported():
    with pytest.raises(UnsupportedError, match="If node.*run time"):
        irtool.import_onnx(_if_model())


def test_dynamic_shape_input_is_reported():
    model, _ = one_op_model("Reshape", [x234, i64(4, 6)])
    model.graph.node[0].name = "my_reshape"
    with pytest.raises(UnsupportedError, match="my_reshape.*run time"):
        irtool.import_onnx(model)


def test_unsupported_ops_listed_with_counts():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("NonZero", ["x"], ["a"]), helper.make_node("NonZero", ["x"], ["b"]),
             helper.make_node("Relu", ["x"], ["c"]), helper.make_node("Det", ["x"], ["d"]),
             helper.make_node("Foo", ["x"], ["e"], domain="custom.domain"),
             helper.make_node("NonZero", ["x"], ["f"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [onnx.ValueInfoProto(name="c")]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.domain", 1)])
    with pytest.raises(UnsupportedError) as e:
        irtool.import_onnx(model)
    msg = str(e.value)
    assert "NonZero (x3)" in msg and "Det (x1)" in msg and "custom.domain::Foo (x1)" in msg
    assert "Relu" not in msg


def test_unsupported_dtype_is_reported():
    x = helper.make_tensor_value_info("x", TensorProto.UINT32, [2])
    model = helper.make_model(helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "g", [x],
                                                [onnx.ValueInfoProto(name="y")]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedError, match="UINT32"):
        irtool.import_onnx(model)


# -- torch-exported models ----------------------------------------------------------

try:
    import torch
except ImportError:       # CI installs torch; without it only these tests skip
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")


def _small_cnn():
    class SmallCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.pool = torch.nn.MaxPool2d(2)
            self.c2 = torch.nn.Conv2d(8, 4, 3, stride=2)
            self.ap = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(4, 5)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn(self.c1(x))))
            x = self.ap(torch.relu(self.c2(x)))
            return self.fc(torch.flatten(x, 1))
    return SmallCNN()


def _encoder_layer():
    class EncoderLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)

        def forward(self, x):
            return self.layer(x, is_causal=False)
    return EncoderLayer()


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 8),
                               torch.nn.Tanh(), torch.nn.Linear(8, 3), torch.nn.Softmax(-1))


TORCH_MODELS = {
    "mlp": (_mlp, (2, 4), {0: "batch"}),
    "cnn": (_small_cnn, (2, 3, 12, 12), {0: "batch"}),
    "transformer": (_encoder_layer, (2, 5, 16), {0: "batch"}),
}


def export_torch(name, dynamic=True, fold=True):
    make, shape, axes = TORCH_MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    if name == "cnn":               # non-trivial running statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(*shape)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, input_names=["x"], output_names=["y"],
                          do_constant_folding=fold,
                          dynamic_axes={"x": axes, "y": {0: "batch"}} if dynamic else None)
    return model, x, onnx.load_from_string(f.getvalue())


@needs_torch
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_torch_export_vs_torch_and_onnxruntime(name, fold):
    model, x, proto = export_torch(name, fold=fold)
    g = irtool.import_onnx(proto)
    irtool.verify(g)
    assert g.inputs[0].shape[0] == "batch" and [v.name for v in g.outputs] == ["y"]
    with torch.no_grad():
        want = model(x).numpy()
    got = irtool.run(g, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, run_ort(proto, {"x": x.numpy()})[0], rtol=1e-5, atol=1e-5)
    if name != "transformer":       # torch bakes the traced length into some reshapes
        x3 = torch.randn(3, *x.shape[1:])
        with torch.no_grad():
            np.testing.assert_allclose(irtool.run(g, {"x": x3.numpy()})[0], model(x3).numpy(),
                                       rtol=1e-5, atol=1e-5)


@needs_torch
def test_unfolded_cnn_keeps_batch_norm():
    _, _, proto = export_torch("cnn", fold=False)
    assert "BatchNormalization" in {n.op_type for n in proto.graph.node}
    g = irtool.import_onnx(proto)
    assert "batch_norm" in g.op_histogram()
    assert "bn.weight" in g.params and "bn.running_mean" in g.params


@needs_torch
@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_round_trip_ir_onnx_ir_onnx(name):
    _, x, proto = export_torch(name)
    feeds = {"x": x.numpy()}
    g1 = irtool.import_onnx(proto)
    m2 = irtool.export_onnx(g1)
    onnx.checker.check_model(m2, full_check=True)
    g2 = irtool.import_onnx(m2)
    m3 = irtool.export_onnx(g2)
    want = irtool.run(g1, feeds)[0]
    for got in (irtool.run(g2, feeds)[0], run_ort(m2, feeds)[0], run_ort(m3, feeds)[0]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [v.name for v in g2.inputs] == ["x"] and [v.name for v in g2.outputs] == ["y"]
    assert g2.inputs[0].shape == g1.inputs[0].shape
    # params come back under the same names, data and trainability (constants stay constants)
    assert set(g1.params) == set(g2.params)
    for name, p in g1.params.items():
        np.testing.assert_array_equal(g2.params[name].data, p.data)
        assert g2.params[name].trainable == p.trainable


# -- external data ------------------------------------------------------------------------

def _external_model(folder, location="weights.bin"):
    """Model whose initializer 'w' lives in external file `location`."""
    model = _mlp_model(dims=(2, 4))
    path = os.path.join(folder, "model.onnx")
    saved = onnx.ModelProto()
    saved.CopyFrom(model)           # save_model rewrites the tensors it externalises
    onnx.save_model(saved, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return model, path


def _set_external(path, **changes):
    """Rewrite the external_data entries of every external initializer."""
    model = onnx.load(path, load_external_data=False)
    for t in model.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        info.update({k: str(v) for k, v in changes.items()})
        del t.external_data[:]
        for k, v in info.items():
            t.external_data.add(key=k, value=v)
    onnx.save_model(model, path)


def test_external_data_valid(tmp_path):
    model, path = _external_model(str(tmp_path))
    assert os.path.exists(tmp_path / "weights.bin")
    feeds = {"x": f32(2, 4)}
    assert_same(irtool.run(irtool.import_onnx(path), feeds), run_ort(model, feeds))


def test_external_data_in_subfolder(tmp_path):
    os.makedirs(tmp_path / "data")
    model, path = _external_model(str(tmp_path), location="data/w.bin")
    feeds = {"x": f32(2, 4)}
    assert_same(irtool.run(irtool.import_onnx(path), feeds), run_ort(model, feeds))


def test_external_data_absolute_path(tmp_path):
    _, path = _external_model(str(tmp_path))
    _set_external(path, location=str(tmp_path / "weights.bin"))
    with pytest.raises(FileFormatError, match="fc.weight.*absolute"):
        irtool.import_onnx(path)


def test_external_data_parent_dir(tmp_path):
    inner = tmp_path / "inner"
    os.makedirs(inner)
    _, path = _external_model(str(inner))
    os.replace(inner / "weights.bin", tmp_path / "x")
    _set_external(path, location="../x")
    with pytest.raises(FileFormatError, match="fc.weight.*leaves"):
        irtool.import_onnx(path)


def test_external_data_symlink_file(tmp_path):
    _, path = _external_model(str(tmp_path))
    os.replace(tmp_path / "weights.bin", tmp_path / "real.bin")
    os.symlink(tmp_path / "real.bin", tmp_path / "weights.bin")
    with pytest.raises(FileFormatError, match="fc.weight.*symlink"):
        irtool.import_onnx(path)


def test_external_data_symlink_parent(tmp_path):
    os.makedirs(tmp_path / "real")
    os.makedirs(tmp_path / "model")
    _, path = _external_model(str(tmp_path / "model"))
    os.replace(tmp_path / "model" / "weights.bin", tmp_path / "real" / "w.bin")
    os.symlink(tmp_path / "real", tmp_path / "model" / "linked")
    _set_external(path, location="linked/w.bin")
    with pytest.raises(FileFormatError, match="fc.weight.*symlink"):
        irtool.import_onnx(path)


def test_external_data_offset_past_end(tmp_path):
    _, path = _external_model(str(tmp_path))
    size = os.path.getsize(tmp_path / "weights.bin")
    _set_external(path, offset=size - 4, length=48)
    with pytest.raises(FileFormatError, match="fc.weight.*past the end"):
        irtool.import_onnx(path)


def test_external_data_missing_file(tmp_path):
    _, path = _external_model(str(tmp_path))
    os.remove(tmp_path / "weights.bin")
    with pytest.raises(FileFormatError, match="fc.weight.*missing"):
        irtool.import_onnx(path)


def test_external_data_not_a_regular_file(tmp_path):
    _, path = _external_model(str(tmp_path))
    os.remove(tmp_path / "weights.bin")
    os.makedirs(tmp_path / "weights.bin")
    with pytest.raises(FileFormatError, match="fc.weight.*regular file"):
        irtool.import_onnx(path)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int8", "int16", "int32", "int64",
                                   "uint8", "bool"])
@pytest.mark.parametrize("shape", [(3, 5), (), (0, 4)])
def test_external_data_dtypes(tmp_path, dtype, shape):
    """Plain numeric types are read straight into an array, the rest through onnx's
    decoding: the same values either way (scalars and empty tensors too)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(shape) * 50).astype(dtype)
    t = numpy_helper.from_array(w, "w")
    g = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "ext", [],
                          [helper.make_tensor_value_info("y", t.data_type, list(shape))], [t])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    path = str(tmp_path / "model.onnx")
    onnx.save_model(model, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    assert onnx.load(path, load_external_data=False).graph.initializer[0].data_location == TensorProto.EXTERNAL
    got = irtool.run(irtool.import_onnx(path), {})[0]
    assert got.dtype == w.dtype and got.shape == w.shape
    np.testing.assert_array_equal(got, w)


def test_external_data_length_that_does_not_fit_the_shape(tmp_path):
    _, path = _external_model(str(tmp_path))
    _set_external(path, offset=0, length=4)
    with pytest.raises(FileFormatError, match="fc.weight"):
        irtool.import_onnx(path)


def test_external_data_needs_a_path(tmp_path):
    _, path = _external_model(str(tmp_path))
    proto = onnx.load(path, load_external_data=False)
    with pytest.raises(FileFormatError, match="fc.weight.*path"):
        irtool.import_onnx(proto.SerializeToString())
