"""The calibration methods as the registry holds them, for `romer methods`, the CLI's help and README's table:
every list of methods a user reads is made here from the registry, so none goes stale."""

from __future__ import annotations

from romer.errors import RomerError

from rich.table import Table


def method_records() -> list[dict]:
    """One record per registered method: name, steps, the defaults it brings, what it does, who registered it."""
    from romer.calibration.registry import methods, origin

    return [{"name": m.name, "steps": list(m.steps), "defaults": dict(m.defaults), "description": m.description,
             "module": origin(m.name)} for m in methods()]


def _defaults(record: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in record["defaults"].items())


def methods_markdown() -> str:
    """README's method table (README.md holds it between the `methods` markers; a test keeps them equal)."""
    lines = ["| method | steps | defaults it brings | what it does |", "|---|---|---|---|"]
    for record in method_records():
        lines.append(f"| `{record['name']}` | {' → '.join(record['steps']) or '—'} | {_defaults(record) or '—'} | "
                     f"{record['description']} |")
    return "\n".join(lines) + "\n"


def methods_table() -> Table:
    table = Table(title="Calibration methods (romer calibrate --method, romer run --methods)")
    table.add_column("method", no_wrap=True, style="bold")
    for column in ("steps", "defaults", "what it does"):
        table.add_column(column, overflow="fold")
    for record in method_records():
        table.add_row(record["name"], " → ".join(record["steps"]) or "—", _defaults(record) or "—",
                      record["description"] + ("" if record["module"].startswith("romer.") else
                                               f" [dim](plugin: {record['module']})[/]"))
    return table


def method_help() -> str:
    """The names, for an option's help (built at import of the CLI: a broken plugin is reported when a command
    runs, in one line, not here as a traceback)."""
    from romer.calibration.registry import builtin_method_names, method_names

    try:
        return ", ".join(method_names())
    except RomerError:
        return ", ".join(builtin_method_names())
