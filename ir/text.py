"""The readable text form of a graph: one line per node, a type on every value.

    graph linear(%x: float32[batch,4]) params(%w: float32[4,3]) {
      %matmul: float32[batch,3] = matmul(%x, %w)
      return %matmul
    }
"""
import numpy as np


def _attr(v):
    if isinstance(v, np.ndarray):
        if v.size <= 4:
            return f"{v.dtype}{list(v.shape)}{v.ravel().tolist()}"
        return f"{v.dtype}{list(v.shape)}{{...}}"
    if isinstance(v, tuple):
        return "(" + ", ".join(_attr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def node_line(node):
    outs = ", ".join(f"%{o.name}: {o.type}" for o in node.outputs)
    args = ", ".join(f"%{v.name}" for v in node.inputs)
    attrs = ", ".join(f"{k}={_attr(v)}" for k, v in node.attrs.items())
    sep = ", " if args and attrs else ""
    return f"{outs} = {node.op.name}({args}{sep}{attrs})"


def graph_text(graph):
    ins = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    params = ", ".join(f"%{n}: {p.value.type}{'' if p.trainable else ' frozen'}"
                       for n, p in graph.params.items())
    lines = [f"graph {graph.name}({ins})" + (f" params({params})" if params else "") + " {"]
    lines += ["  " + node_line(n) for n in graph.nodes]
    lines.append("  return " + ", ".join(f"%{o.name}" for o in graph.outputs))
    lines.append("}")
    return "\n".join(lines)
