"""The docs build without warnings, and every code block in README.md and docs/ is exercised:
Python blocks run (in a temporary folder, one namespace per page), YAML blocks load as prodrec
configs (detector configs on the detection page) or loss lists, and every ``prodrec ...`` command line parses with the real CLI parser.
A Python block that needs a file the reader brings (e.g. PaddleClas weights) is preceded by
``<!-- not run: reason -->`` and is compiled only."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prodrec.cli import build_parser
from prodrec.config import Config, DetectionConfig, load_config
from prodrec.losses import build_loss

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- not run: (?P<reason>[^>]+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


def blocks(page: Path, lang: str):
    return [(m["body"], m["reason"]) for m in BLOCK.finditer(page.read_text()) if m["lang"] == lang]


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def test_docs_build_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Image -&gt; embedding model" in (tmp_path / "site" / "api" / "index.html").read_text()


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=page_id)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    from prodrec.data import DATASET_READERS
    from prodrec.losses import LOSSES

    monkeypatch.chdir(tmp_path)
    for registry in (DATASET_READERS, LOSSES):  # what a page registers is gone after it
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    namespace = {"__name__": "__docs__"}
    for body, not_run in blocks(page, "python"):
        code = compile(body, f"{page.name} code block", "exec")
        if not not_run:
            exec(code, namespace)


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "yaml")], ids=page_id)
def test_yaml_blocks_are_valid_configs(page):
    for body, _ in blocks(page, "yaml"):
        data = yaml.safe_load(body)
        if isinstance(data, list):  # a fragment of Loss.Train
            build_loss(data, head=load_config().Arch.Head, num_classes=10, embedding_size=16)
        else:  # the detection page's configs are detector runs
            load_config(data, schema=DetectionConfig if page.name == "detection.md" else Config)


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash")], ids=page_id)
def test_command_lines_parse(page):
    parser = build_parser()
    commands = [part.strip() for body, _ in blocks(page, "bash") for line in body.replace("\\\n", " ").splitlines()
                for part in line.split("#")[0].split("&&")]
    # `torchrun ... -m prodrec ARGS` runs the same command line as `prodrec ARGS`.
    commands = ["prodrec" + c.split(" -m prodrec", 1)[1] if c.startswith("torchrun ") and " -m prodrec" in c else c
                for c in commands]
    prodrec_commands = [c for c in commands if c.startswith("prodrec ")]
    for command in prodrec_commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exit_:
            assert exit_.code == 0, f"{page.name}: {command!r} does not parse"
    assert prodrec_commands or any(c.startswith(("pip ", "python ")) for c in commands)
