"""The package layout: few modules at the top, packages that use each other through public names, and one
Learner class whose every public method is written out in learner.py."""
import ast
import inspect

from test_imports import PACKAGE, import_graph, module_name

import slowlearn
from slowlearn import Learner

SUBPACKAGES = ("callbacks", "data", "models", "deploy", "cli")


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in SUBPACKAGES else ""


def test_at_most_twenty_modules_stay_at_the_top():
    top = [p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert len(top) <= 20, sorted(top)
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(SUBPACKAGES)


def test_no_private_name_crosses_a_package_border():
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = package_of(module_name(path)) if path.name != "__init__.py" else package_of(module_name(path) + ".x")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            names = [a.name for a in node.names]
            target = (node.module or "").split(".")
            where = target[0] if node.level == 2 or (node.level == 1 and here == "") else here
            if where != here and any(n.startswith("_") and not n.startswith("__") for n in names + target):
                crossings.append(f"{path.relative_to(PACKAGE)}: from {'.' * node.level}{node.module} import {names}")
    assert crossings == []


def test_the_packages_are_layers_not_a_web():
    """data, models and deploy never reach up into the loop, the callbacks or the command line."""
    graph = import_graph()
    upper = ("slowlearn.learner", "slowlearn.callbacks", "slowlearn.cli", "slowlearn.train", "slowlearn.recipes",
             "slowlearn.tuning")
    for module, imports in graph.items():
        if package_of(module) in ("data", "models", "deploy"):
            assert not [m for m in imports if m.startswith(upper)], module


def test_the_learner_has_no_mixins_and_defines_every_public_method_itself():
    assert Learner.__mro__ == (Learner, object)
    public = [name for name, _ in inspect.getmembers(Learner, callable) if not name.startswith("_")]
    assert len(public) >= 23
    for name in public:
        assert name in Learner.__dict__, name
        assert inspect.getmodule(Learner.__dict__[name]) is inspect.getmodule(Learner), name
        assert inspect.getdoc(getattr(Learner, name)), f"Learner.{name} has no docstring"


def test_the_command_line_needs_no_injected_functions():
    source = (PACKAGE / "cli" / "deploy.py").read_text()
    assert "def add_model_commands(sub) -> None" in source and "args.rebuild" not in source


def test_public_names_are_those_of_before_the_move():
    from pathlib import Path
    before = ast.literal_eval((Path(__file__).parent / "fixtures" / "public_names.txt").read_text())
    assert sorted(slowlearn.__all__) == before
    namespace = {}
    exec("from slowlearn import *", namespace)
    assert set(before) <= set(namespace)
