"""Bad configs fail with the file, the dotted key and what was expected: exit 2, no traceback."""

import subprocess

import pytest

from tests.conftest import CLI
from vaestudy.cli import main


def run_cli(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "yaml_text, key, expected",
    [
        ("train: {epochs: many}\n", "train.epochs", "valid number"),
        ("train: {epoch: 3}\n", "train.epoch", "unknown key"),
        ("objective: {name: nonsense}\n", "objective.name", "elbo"),
        ("objective: {name: geco, multiplier: {lr: 0}}\n", "objective.multiplier.lr", "than 0"),
        (
            "objective: {name: lagvae, epsilon: [80, -1]}\n",
            "objective.epsilon.1",
            "greater than or equal to 0",
        ),
        ("model: {name: resnet}\n", "model.name", "mlp"),
        ("objective: {name: icvae}\n", "(top level)", "conditional"),
    ],
)
def test_bad_config_is_reported_with_file_and_key(tmp_path, capsys, yaml_text, key, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    code, err = run_cli(["train", str(path)], capsys)
    assert code == 2
    assert f"{path}: {key}:" in err
    assert expected in err
    assert "Traceback" not in err


def test_malformed_yaml_and_missing_file(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("train: {epochs: [1,\n")
    code, err = run_cli(["train", str(path)], capsys)
    assert code == 2 and f"{path}: not valid YAML" in err
    code, err = run_cli(["train", str(tmp_path / "absent.yaml")], capsys)
    assert code == 2 and "cannot read file" in err
    binary = tmp_path / "program"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")  # an executable, as `/bin/ls`
    for command in ("train", "validate", "run"):
        code, err = run_cli([command, str(binary)], capsys)
        assert code == 2 and f"{binary}: not a text file (byte 8 is not UTF-8)" in err, err
        assert "Traceback" not in err


def test_bad_override(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text("train: {epochs: 1}\n")
    code, err = run_cli(["train", str(path), "--set", "train.lr=-1"], capsys)
    assert code == 2 and "train.lr" in err and "greater than 0" in err
    code, err = run_cli(["train", str(path), "--set", "nokey"], capsys)
    assert code == 2 and "KEY=VALUE" in err


def test_missing_data_exits_2_without_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{root: {tmp_path / 'empty'}}}\n")
    proc = subprocess.run([*CLI, "train", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "MNIST/raw" in proc.stderr and "Traceback" not in proc.stderr
