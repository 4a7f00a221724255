"""Issue 16 point 2: no import circles in the device library, lazy imports included. A module
loaded on first use (tlsx, storeedit, httpsx, ...) takes what it needs from where both it and
its caller can import it, never from its caller: otherwise the two import each other."""
import ast
import pathlib

LIB = pathlib.Path(__file__).resolve().parents[2] / "lib" / "keypin"


def _graph():
    names = {f.stem for f in LIB.glob("*.py")} - {"__init__"}
    g = {}
    for f in LIB.glob("*.py"):
        me = "keypin" if f.stem == "__init__" else f"keypin.{f.stem}"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keypin"):
                if node.module == "keypin":
                    deps |= {f"keypin.{a.name}" for a in node.names if a.name in names}
                else:
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("keypin.")}
        g[me] = deps - {me, "keypin"}  # `from keypin import X` of the package's errors is the root
    return g


def _cycle(g):
    state = {}

    def visit(n, path):
        state[n] = 1
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                c = visit(m, path + [m])
                if c:
                    return c
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state:
            c = visit(n, [n])
            if c:
                return c
    return None


def test_graph_sees_lazy_imports():
    g = _graph()
    assert "keypin.tlsx" in g["keypin.tls"]  # imported inside functions only
    assert "keypin.storeedit" in g["keypin.store"]


def test_no_import_circles_in_the_device_library():
    c = _cycle(_graph())
    assert c is None, "import circle: " + " -> ".join(c)
