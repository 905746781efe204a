"""Python names for generated framework code: IR value and graph names made
into identifiers (argument names of generated forward/__call__ functions,
class names)."""
import keyword
import re


def identifier(name):
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit() or keyword.iskeyword(s) or s == "self":
        s = "in_" + s
    return s


def arg_names(names):
    """Distinct identifiers for a list of graph input names."""
    out, seen = [], set()
    for n in names:
        s, i = identifier(n), 0
        base = s
        while s in seen:
            i += 1
            s = f"{base}_{i}"
        seen.add(s)
        out.append(s)
    return out


def class_name(name):
    return "IR_" + re.sub(r"\W", "_", name or "graph")
