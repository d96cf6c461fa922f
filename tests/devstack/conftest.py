"""Shared fixtures of the devstack tests: the fixture template and an isolated mock AWS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from devstack.template import Template, load_template
from tests.conftest import ROOT

FIXTURE_DIR = Path(__file__).parent / "fixture"
FIXTURE_TEMPLATE = FIXTURE_DIR / "template.yaml"
REPO_TEMPLATE = ROOT / "template.yaml"


@pytest.fixture
def fixture_dir() -> Path:
    return FIXTURE_DIR


@pytest.fixture
def fixture_template_path() -> Path:
    return FIXTURE_TEMPLATE


@pytest.fixture
def repo_template_path() -> Path:
    return REPO_TEMPLATE


@pytest.fixture
def fixture_template() -> Template:
    return load_template(FIXTURE_TEMPLATE)


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    """moto's in-process mock with dummy credentials; nothing can reach a real endpoint."""
    with mock_aws():
        yield


@pytest.fixture
def fixture_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture stack's layer on sys.path, as the local stack puts it there for its handlers."""
    monkeypatch.syspath_prepend(str(FIXTURE_DIR / "layer"))
