"""Writes a benchmark's results into its own section of docs/benchmarks.md, with the command that made them."""

from __future__ import annotations

import platform
import re
import sys
from datetime import date
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, PyTorch {torch.__version__}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, PyTorch {torch.__version__}"


def write_section(key: str, title: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- key -->`` markers."""
    module = getattr(sys.modules["__main__"].__spec__, "name", Path(sys.argv[0]).stem)
    command = " ".join(["python -m", module, *sys.argv[1:]])
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    section = (f"{start}\n### {title}\n\n`{command}` on {machine()}, {date.today():%Y-%m-%d}.\n\n"
               f"{body.strip()}\n{end}")
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    DOC.write_text(text)
