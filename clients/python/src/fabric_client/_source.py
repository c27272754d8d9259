"""The source of a Python function as the fabric registers it: ``inspect.getsource`` of the
function, dedented, its decorators removed, after an ``import`` line for each module the
function reaches through a global name (``np`` of ``import numpy as np``), since the function
runs remotely without the module it was written in."""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from typing import Callable, List, Set, Tuple


def _names_used(code: types.CodeType, seen: Set[str]) -> None:
    """The global names ``code`` and the code objects nested in it load."""
    seen.update(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _names_used(const, seen)


def module_imports(func: Callable) -> List[str]:
    """``import`` lines for the modules ``func`` reaches through its globals, sorted."""
    code = getattr(func, "__code__", None)
    if code is None:
        return []
    names: Set[str] = set()
    _names_used(code, names)
    lines = []
    for name in sorted(names):
        value = func.__globals__.get(name)
        if not isinstance(value, types.ModuleType):
            continue
        module = value.__name__
        if module == "__main__":
            continue
        if module == name:
            lines.append("import %s" % module)
        elif "." in module and module.rsplit(".", 1)[1] == name:
            lines.append("from %s import %s" % tuple(module.rsplit(".", 1)))
        else:
            lines.append("import %s as %s" % (module, name))
    return lines


def function_source(func: Callable) -> Tuple[str, str]:
    """``(source, entry_point)`` of a plain function defined with ``def`` (or ``async def``)
    in a file or notebook cell. A lambda, a builtin, a class or a closure is refused with a
    ``TypeError`` or ``ValueError`` that says why and what to do instead."""
    target = inspect.unwrap(func)
    if not inspect.isfunction(target):
        raise TypeError(
            "register_function takes a function defined with def, got %s; register other callables "
            "as source with register_python" % type(func).__name__
        )
    if target.__name__ == "<lambda>":
        raise ValueError("a lambda has no name to call it by: define the function with def")
    if target.__code__.co_freevars:
        raise ValueError(
            "%s uses variables of the function it is defined in (%s); it runs remotely without them: "
            "define it at module level, or pass them as arguments" % (target.__name__, ", ".join(target.__code__.co_freevars))
        )
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError) as err:
        raise ValueError(
            "the source of %s cannot be found (%s): define it in a file or a notebook cell, or "
            "register its source with register_python" % (target.__name__, err)
        ) from None
    text = textwrap.dedent(text)
    tree = ast.parse(text)
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ValueError("the source of %s does not start with its def" % target.__name__)
    # Decorators sit above the def line (node.lineno is the def's own line): drop them, since the
    # remote side has neither the decorators nor a reason to wrap the function again.
    lines = text.splitlines(keepends=True)
    body = "".join(lines[node.lineno - 1 :])
    if not body.endswith("\n"):
        body += "\n"
    imports = module_imports(target)
    source = ("\n".join(imports) + "\n\n\n" + body) if imports else body
    # The def's own name (a function renamed after its def is called by the name in its source).
    return source, node.name
