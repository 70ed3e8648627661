"""The top-level mlflow/ folder must never shadow the mlflow package."""

import mlflow
from tests.conftest import REPO


def test_mlflow_folder_does_not_shadow_the_package():
    assert not list((REPO / "mlflow").glob("*.py"))
    assert "site-packages" in mlflow.__file__
