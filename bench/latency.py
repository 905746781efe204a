"""onnxruntime latency of irtool's ONNX vs each peer's ONNX for the same
model: same inputs, same SessionOptions, node counts of both files, and the
largest output difference between them (a guard that they compute the same)."""
import numpy as np
import onnx

from bench import converters
from bench.conversion import one_line
from bench.measure import measure_many
from bench.report import Row


def session(path, threads=2):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def node_count(path):
    return len(onnx.load(path, load_external_data=False).graph.node)


def run_ort(ctx):
    rows = []
    r = ctx.repeats
    cases = [(c, converters.TORCH_PEERS, c.numpy_inputs()) for c in ctx.torch_cases()]
    cases += [(c, converters.KERAS_PEERS, c.inputs) for c in ctx.keras_cases()]
    for case, peers, inputs in cases:
        print(f"  ort {case.name}", flush=True)
        fns, outs, nodes, failed = {}, {}, {}, {}
        for key in ["irtool", *peers]:
            try:
                path = converters.exported(ctx, case, key)
                sess = session(path, ctx.threads)
                feed = {i.name: a for i, a in zip(sess.get_inputs(), inputs)}
                outs[key] = sess.run(None, feed)[0]
                nodes[key] = node_count(path)
                fns[key] = (lambda s=sess, f=feed: s.run(None, f))
            except Exception as e:  # noqa: BLE001
                failed[key] = e
        if "irtool" in failed:
            ctx.note(f"ort {case.name}: irtool's file did not run: {one_line(failed['irtool'])}")
            continue
        res = measure_many(fns, r.latency, warmup=3, budget_s=r.budget_s, rounds=5, settle=2)
        for key, (_, label) in peers.items():
            theirs = res.get(key, failed.get(key))
            if isinstance(theirs, Exception):
                rows.append(Row("ort", case.name, label, res["irtool"], None,
                                f"peer failed: {one_line(theirs)}", scale=1000.0))
                continue
            diff = float(np.max(np.abs(np.asarray(outs[key], np.float64) - np.asarray(outs["irtool"], np.float64))))
            rows.append(Row("ort", case.name, label, res["irtool"], theirs,
                            f"nodes {nodes['irtool']} vs {nodes[key]}; max abs diff {diff:.1e}", scale=1000.0))
    return rows
