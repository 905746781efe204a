"""onnxruntime latency of irtool's ONNX vs each peer's ONNX for the same
model: same inputs, same SessionOptions, node counts of both files, and the
largest output difference between them (a guard that they compute the same)."""
import numpy as np
import onnx

from bench import converters
from bench.conversion import _one_line
from bench.measure import measure
from bench.report import Row


def session(path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def node_count(path):
    model = onnx.load(path, load_external_data=False)
    return len(model.graph.node)


def _feed(sess, inputs):
    return {i.name: a for i, a in zip(sess.get_inputs(), inputs)}


def run_ort(ctx):
    rows = []
    r = ctx.repeats
    cases = [(c, converters.TORCH_PEERS, c.numpy_inputs()) for c in ctx.torch_cases()]
    cases += [(c, converters.KERAS_PEERS, c.inputs) for c in ctx.keras_cases()]
    for case, peers, inputs in cases:
        print(f"  ort {case.name}", flush=True)
        try:
            ours_path = converters.exported(ctx, case, "irtool")
            ours_sess = session(ours_path)
            ours_feed = _feed(ours_sess, inputs)
            ours_out = ours_sess.run(None, ours_feed)[0]
            ours = measure(lambda: ours_sess.run(None, ours_feed), r.latency, warmup=3, budget_s=r.budget_s)
            ours_nodes = node_count(ours_path)
        except Exception as e:  # noqa: BLE001
            ctx.note(f"ort {case.name}: irtool's file did not run: {_one_line(e)}")
            continue
        for key, (_, label) in peers.items():
            try:
                path = converters.exported(ctx, case, key)
                sess = session(path)
                feed = _feed(sess, inputs)
                out = sess.run(None, feed)[0]
                theirs = measure(lambda: sess.run(None, feed), r.latency, warmup=3, budget_s=r.budget_s)
                diff = float(np.max(np.abs(np.asarray(out, np.float64) - np.asarray(ours_out, np.float64))))
                notes = f"nodes {ours_nodes} vs {node_count(path)}; max abs diff {diff:.1e}"
            except Exception as e:  # noqa: BLE001
                theirs, notes = None, f"peer failed: {_one_line(e)}"
            rows.append(Row("ort", case.name, label, ours, theirs, notes, scale=1000.0))
    return rows
