"""Generated parts of README.md: the method table and the tiny-benchmark results.

Generated blocks sit between ``<!-- NAME:start ... -->`` and ``<!-- NAME:end -->`` markers, so a
script can rewrite them and a test can check they are current.
"""

from __future__ import annotations

from pathlib import Path

from fusion_bench.constants import config_dir


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start (generated; do not edit by hand) -->", f"<!-- {name}:end -->"


def method_table(method_dir: Path | None = None) -> str:
    """Markdown table of all method configs: name, first comment line, default hyperparameters."""
    from omegaconf import OmegaConf

    method_dir = method_dir or config_dir() / "method"
    rows = ["| `method=` | what it is | defaults |", "|---|---|---|"]
    for path in sorted(method_dir.glob("*.yaml")):
        lines = path.read_text().splitlines()
        desc = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        defaults = ", ".join(f"{k}={v}" for k, v in cfg.items() if not k.startswith("_"))
        rows.append(f"| `{path.stem}` | {desc} | {defaults or '—'} |")
    return "\n".join(rows) + "\n"


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with the generated block ``name`` replaced by ``content``."""
    start, end = _markers(name)
    if start not in text or end not in text:
        raise ValueError(f"README lacks the markers of block '{name}'")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}{end}{tail}"


def update_readme(readme: Path, blocks: dict[str, str], check: bool = False) -> list[str]:
    """Rewrite the named blocks; return the names of blocks that were stale.

    With ``check=True`` nothing is written.
    """
    text = readme.read_text()
    stale = []
    for name, content in blocks.items():
        new = replace_block(text, name, content)
        if new != text:
            stale.append(name)
            text = new
    if stale and not check:
        readme.write_text(text)
    return stale
