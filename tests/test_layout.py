"""The house rules of the source tree (issue 29), measured on ``src/``: no module over 500 lines, no
function over 80 lines, no function taking more than 10 parameters (``self`` / ``cls`` not counted;
options travel in dataclasses)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 10


def _sources():
    return sorted(SRC.rglob("*.py"))


def _functions():
    """(path relative to src, function name, lines, parameters) of every def and async def."""
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                positional = a.posonlyargs + a.args
                if positional and positional[0].arg in ("self", "cls"):
                    n -= 1
                yield path.relative_to(SRC), node.name, node.end_lineno - node.lineno + 1, n


def test_no_module_over_500_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in _sources()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"modules over {MAX_FILE_LINES} lines (split them by job): {long}"


def test_no_function_over_80_lines():
    long = [f"{p}:{name} ({n} lines)" for p, name, n, _ in _functions() if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (name their steps): {long}"


def test_no_function_over_10_parameters():
    many = [f"{p}:{name} ({k} parameters)" for p, name, _, k in _functions() if k > MAX_PARAMETERS]
    assert not many, f"functions over {MAX_PARAMETERS} parameters (an options dataclass): {many}"
