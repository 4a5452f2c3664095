"""No import circle anywhere in romer/, at module level or inside a function; and every registry refuses a name
already taken, in one line naming both origins."""

from __future__ import annotations

import pytest

from romer.errors import RomerError
from tests.test_registry import ROOT, imports_of, module_name

PACKAGE = ROOT / "romer"


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) - {module_name(f)} for f in files}


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [])):
            return found
    return None


def test_the_walker_finds_a_circle_when_there_is_one():
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_anywhere_in_romer():
    graph = import_graph()
    assert len(graph) > 100  # the walker sees the whole package
    found = circle(graph)
    assert found is None, "import circle: " + " → ".join(found)


def test_the_registries_are_leaves_of_their_floors():
    graph = import_graph()
    assert graph["romer.registry"] == {"romer.errors"}
    assert graph["romer.noise.preset_registry"] <= {"romer.errors", "romer.registry"}
    assert "romer.moe.families" not in graph["romer.moe.adapter"]  # the families register themselves at import


def test_every_registry_refuses_a_taken_name_naming_both_origins():
    from romer.data import CorpusSource, register
    from romer.moe import MoeAdapter, register_adapter
    from romer.noise import NoiseConfig, Preset, register_preset

    with pytest.raises(RomerError, match=r"noise preset 'cim-80c' is already registered by romer\.noise\.presets; "
                                         r"tests\.test_import_graph registers it again"):
        register_preset(Preset("cim-80c", "a second one", "—", NoiseConfig()))
    with pytest.raises(RomerError, match=r"corpus 'stdlib' is already registered by romer\.data\.registry; "
                                         r"tests\.test_import_graph registers it again"):
        register(CorpusSource("stdlib", "a second one", ("test",), "test", lambda split: ["x"]))

    class Shadow(MoeAdapter):
        model_types = ("olmoe",)

    with pytest.raises(RomerError, match=r"for model type 'olmoe' is already registered by "
                                         r"romer\.moe\.families\.softmax_topk\.\w+; "
                                         r"tests\.test_import_graph\.[\w.<>]*Shadow registers it again"):
        register_adapter(Shadow)


def test_a_family_can_be_replaced_after_unregistering_the_built_in():
    from romer.moe import adapter_for, register_adapter, unregister_adapter
    from romer.moe.adapter import ADAPTERS
    from tests.families import build

    model = build("olmoe")
    built_in = adapter_for(model)
    origin = ADAPTERS.origin("olmoe")

    class Mine(type(built_in)):
        model_types = ("olmoe",)

    unregister_adapter("olmoe")
    try:
        register_adapter(Mine)
        assert isinstance(adapter_for(model), Mine)
    finally:
        unregister_adapter("olmoe")
        ADAPTERS.add("olmoe", built_in, origin)
    assert adapter_for(model) is built_in


def test_every_name_the_scripts_import_from_romer_exists():
    """bench/, scripts/ and docs/examples/ run outside the test suite's imports: a name moved or renamed inside romer
    must not leave one of them failing at its first line."""
    import ast
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    missing = []
    for path in sorted([*root.glob("bench/*.py"), *root.glob("scripts/*.py"), *root.glob("docs/examples/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "romer":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None:
                        missing.append(f"{path.relative_to(root)}: {node.module}.{alias.name}")
    assert missing == []
