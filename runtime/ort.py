"""The onnxruntime backend: export in memory, run, cache the session.

Sessions are cached on the graph object per device, so repeated runs do not
re-export. device="cuda" needs onnxruntime-gpu and a visible GPU. Sessions
use OMP_NUM_THREADS intra-op threads when it is set (as torch and BLAS do;
onnxruntime itself ignores it), else onnxruntime's default.

`CarriedRunner` runs one graph over and over where some outputs are the next
run's inputs (a training step's params and optimizer state): those stay
onnxruntime OrtValues between runs, and reach numpy only when read."""
import os

import numpy as np

from irtool.errors import IRToolError, RuntimeFailure
from irtool.ir.dtypes import np_dtype


def providers_for(device):
    import onnxruntime as ort
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise IRToolError("device='cuda' needs onnxruntime-gpu and a CUDA GPU; this onnxruntime has "
                              + ", ".join(ort.get_available_providers()))
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise IRToolError(f"unknown device {device!r}; use 'cpu' or 'cuda'")


def session_options():
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads.isdigit() and int(threads) > 0:
        opts.intra_op_num_threads = int(threads)
    return opts


def session_for(graph, device="cpu", opset=None):
    import onnxruntime as ort

    from irtool.exporters.onnx import to_model
    from irtool.runtime.interpreter import _fingerprint
    cache = graph.__dict__.setdefault("_ort_sessions", {})
    key = (device, opset, _fingerprint(graph))
    if key not in cache:
        model = to_model(graph, opset)
        cache.clear()
        cache[key] = ort.InferenceSession(model.SerializeToString(), session_options(),
                                          providers=providers_for(device))
    return cache[key]


def _failure(graph, e):
    return RuntimeFailure(f"onnxruntime failed on {graph.name}: {str(e).strip().splitlines()[0]}")


def run_ort(graph, inputs, device="cpu"):
    from irtool.runtime.interpreter import check_inputs
    arrays, _ = check_inputs(graph.inputs, inputs)
    sess = session_for(graph, device)
    try:
        return sess.run(None, {v.name: a for v, a in zip(graph.inputs, arrays)})
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are untyped
        raise _failure(graph, e) from e


class CarriedRunner:
    """Runs `graph` repeatedly; its first len(carried) inputs are carried:
    output i of one run is input i of the next. The carried tensors live in
    two sets of OrtValues bound with IOBinding, one as inputs and one as
    outputs, which swap roles after every run: no copy between numpy and
    onnxruntime per run, only the other inputs are bound each time.

    `run(others)` takes the other inputs (checked against the graph once per
    shapes-and-dtypes signature) and returns the outputs after the carried
    ones as numpy arrays; `carried()` copies the current carried values to
    numpy. The session is made once, on the first run."""

    def __init__(self, graph, carried, device="cpu"):
        self.graph, self.device = graph, device
        self.n = len(carried)
        self._initial = [np.array(a, copy=True) for a in carried]
        self._types = [(np.asarray(a).dtype, np.asarray(a).shape) for a in carried]
        self._sess = None
        self._signatures = set()

    def _start(self):
        import onnxruntime as ort
        sess = session_for(self.graph, self.device)
        n, dev = self.n, self.device
        in_names = [v.name for v in self.graph.inputs]
        out_names = [o.name for o in sess.get_outputs()]
        if dev == "cpu":
            # numpy-backed OrtValues: onnxruntime writes straight into these arrays
            self._bufs = [self._initial, [np.empty_like(a) for a in self._initial]]
            sets = [[ort.OrtValue.ortvalue_from_numpy(a) for a in bufs] for bufs in self._bufs]
        else:
            self._bufs = None
            sets = [[ort.OrtValue.ortvalue_from_numpy(a, dev, 0) for a in self._initial],
                    [ort.OrtValue.ortvalue_from_shape_and_type(a.shape, a.dtype.type, dev, 0) for a in self._initial]]
        self._sets = sets
        # the other outputs (the loss) go to host arrays when their shape is static
        self._rest = []
        for v, name in zip(self.graph.outputs[n:], out_names[n:]):
            static = all(isinstance(d, int) for d in v.shape)
            arr = np.empty(v.shape, np_dtype(v.dtype)) if static else None
            self._rest.append((name, arr, ort.OrtValue.ortvalue_from_numpy(arr) if static else None))
        self._bindings = []
        for src, dst in ((sets[0], sets[1]), (sets[1], sets[0])):
            io = sess.io_binding()
            for name, v in zip(in_names[:n], src):
                io.bind_ortvalue_input(name, v)
            for name, v in zip(out_names[:n], dst):
                io.bind_ortvalue_output(name, v)
            for name, _, ov in self._rest:
                if ov is not None:
                    io.bind_ortvalue_output(name, ov)
                else:
                    io.bind_output(name, "cpu")
            self._bindings.append(io)
        self._other_names = in_names[n:]
        self._current = 0        # index of the set holding the current carried values
        self._initial = None
        self._sess = sess

    def _check(self, others):
        """Check `others` once per signature, with stand-ins for the carried values."""
        signature = tuple((a.dtype, a.shape) for a in others)
        if signature in self._signatures:
            return
        from irtool.runtime.interpreter import check_inputs
        stand_ins = [np.broadcast_to(np.zeros((), dt), shape) for dt, shape in self._types]
        check_inputs(self.graph.inputs, stand_ins + list(others))
        self._signatures.add(signature)

    def run(self, others):
        others = [np.asarray(a, order="C") for a in others]    # (ascontiguousarray makes 0-d 1-d)
        self._check(others)
        if self._sess is None:
            self._start()
        io = self._bindings[self._current]
        for name, a in zip(self._other_names, others):
            io.bind_cpu_input(name, a)
        try:
            self._sess.run_with_iobinding(io)
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors are untyped
            raise _failure(self.graph, e) from e
        self._current ^= 1
        outs = []
        dynamic = None
        for i, (_, arr, ov) in enumerate(self._rest):
            if arr is not None:
                outs.append(arr.copy())
            else:
                dynamic = dynamic or io.get_outputs()
                outs.append(dynamic[self.n + i].numpy().copy())
        return outs

    def carried(self):
        """Copies of the current carried values as numpy arrays."""
        if self._sess is None:
            return [a.copy() for a in self._initial]
        if self._bufs is not None:
            return [a.copy() for a in self._bufs[self._current]]
        return [v.numpy() for v in self._sets[self._current]]
