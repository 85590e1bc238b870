"""Config parsing is bounded: alias bombs, huge files and huge values are refused quickly and briefly."""
import subprocess
import sys

import pytest

from prodrec.config import MAX_CONFIG_VALUES, ConfigError, load_config, parse_yaml

LEVELS = "\n".join(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]"
                   for previous, name in zip("abcdefgh", "bcdefghi"))
BOMB = f'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n{LEVELS}\n'  # 9**9 values

CHILD = r"""
import sys
from pathlib import Path
from prodrec.config import load_config
try:
    load_config(sys.argv[1]) if sys.argv[2] == "file" else load_config(None, overrides=[sys.argv[1]])
except ValueError as error:
    print(str(error))
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
print(int(status["VmHWM"].split()[0]) // 1024)  # peak resident MiB of this process alone
"""


@pytest.mark.parametrize("where", ["file", "set"])
def test_a_billion_laughs_document_is_refused_before_it_expands(tmp_path, where):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + "Global:\n  seed: *i\n")
    argument = str(path) if where == "file" else "Global.seed={" + BOMB.replace("\n", ", ") + "x: *i}"
    child = subprocess.run([sys.executable, "-c", CHILD, argument, where], capture_output=True, text=True,
                           timeout=120)  # before, it grew to 5 GB and ran until killed
    message, peak_mib = child.stdout.strip().splitlines()
    assert "with its aliases (&name / *name) expanded, the document holds" in message, child.stderr
    assert f"over the {MAX_CONFIG_VALUES:,} a config may have" in message and len(message) < 600
    assert int(peak_mib) < 200


def test_a_huge_file_is_refused_by_its_size(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("Global:\n  seed: 1\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=r"big.yaml: 2,000,018 bytes is over the 1,048,576 a config file may have"):
        load_config(path)


def test_error_messages_quote_values_briefly():
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides=[("Global.seed", list(range(100_000)))])
    assert "Global.seed" in str(caught.value) and "[0, 1, 2, 3, 4, 5, ...]" in str(caught.value)
    assert len(str(caught.value)) < 300
    with pytest.raises(ConfigError, match=r"Global.epochs: expected int, got 'x{37}\.\.\.x{38}' \(str\)$"):
        load_config(None, overrides=[("Global.epochs", "x" * 10_000)])


def test_ordinary_aliases_still_work():
    assert parse_yaml("base: &base {lr: 0.1}\nrun: *base\n", "test") == {"base": {"lr": 0.1}, "run": {"lr": 0.1}}
    assert parse_yaml("", "empty") is None
    with pytest.raises(ConfigError, match="test: not valid YAML"):
        parse_yaml("a: [", "test")
