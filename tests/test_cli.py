import io
import json
import subprocess
import sys

import pandas as pd
import pytest

from dissipate.cli import main
from dissipate.models import count_parameters, create_model


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `dissipate ARGS` in this process; (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_models_csv_lists_the_selected_models(capsys):
    code, out, _ = run_cli(capsys, "models", "resnet20", "pnnh*", "--format", "csv")
    assert code == 0
    table = pd.read_csv(io.StringIO(out))
    assert list(table["model"]) == ["resnet20", "pnnh18", "pnnh20", "pnnh32", "pnnh34", "pnnh44", "pnnh56", "pnnh110"]
    assert list(table.columns) == ["model", "family", "depth", "stem", "params", "flops_32px", "flops_224px"]
    assert table.set_index("model").loc["pnnh20", "params"] == count_parameters(create_model("pnnh20"))


def test_models_json_and_table(capsys):
    code, out, _ = run_cli(capsys, "models", "vgg11", "--format", "json", "--num-classes", "1000")
    assert code == 0 and json.loads(out)[0]["params"] == 132_868_840  # torchvision's vgg11_bn
    code, out, _ = run_cli(capsys, "models", "resnet18")
    assert code == 0 and "resnet18" in out and "11.18M" in out and "flops_224px" in out
    code, out, _ = run_cli(capsys, "models", "resnet20", "--image-size", "28", "--format", "csv")
    assert code == 0 and out.splitlines()[0].endswith(",params,flops_28px")


@pytest.mark.parametrize("args, message", [
    (["models", "resnet35"], "unknown model 'resnet35'; did you mean resnet34"),
    (["models", "densenet*"], "no model matches 'densenet*'"),
    (["models", "resnet20", "--stem", "huge"], "unknown stem 'huge'"),
    (["models", "resnet20", "--num-classes", "0"], "num_classes must be a positive integer"),
    (["models", "vgg11", "--stem", "cifar", "--image-size", "16"], "vgg11 cannot take 16x16 images"),
    (["models", "resnet20", "--image-size", "0"], "image sizes must be positive integers, got [0]"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert err.strip().count("\n") == 0 and message in err
    assert "Traceback" not in out + err


def test_installed_entry_point_reports_errors_without_traceback():
    result = subprocess.run([sys.executable, "-m", "dissipate", "models", "resnet35"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: unknown model 'resnet35'; did you mean resnet34, resnet32, resnet50? "
                                     "(`dissipate models` lists them all)")
    version = subprocess.run([sys.executable, "-m", "dissipate", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("dissipate ")
