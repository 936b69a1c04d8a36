"""The policies are pure: the engine, the simulator and adapters all import them."""

import ast
import pathlib
import subprocess
import sys

import autellix

PACKAGE = pathlib.Path(autellix.__file__).parent
PURE = [
    *sorted((PACKAGE / "scheduling").glob("*.py")),
    PACKAGE / "balancing.py",
    PACKAGE / "programs.py",
]
FORBIDDEN = ("torch", "autellix.engine", "autellix.server", "transformers", "fastapi")


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_retention_policy_is_among_the_pure_modules() -> None:
    assert PACKAGE / "scheduling" / "retention.py" in PURE


def test_pure_modules_import_nothing_impure() -> None:
    for path in PURE:
        for name in imported_modules(path):
            assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"


def test_importing_the_policies_loads_no_impure_module() -> None:
    code = (
        "import sys, autellix.scheduling, autellix.scheduling.retention, autellix.balancing,"
        " autellix.programs;"
        f"bad = [m for m in sys.modules if m.startswith({FORBIDDEN!r})];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_calls_settings_load_no_torch() -> None:
    """The server and the policies read sampling and engine settings without the model."""
    code = (
        "import sys, autellix.engine.sampling_params, autellix.engine.config;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
