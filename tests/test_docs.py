"""The documentation site builds with ``mkdocs build --strict`` (every internal link and anchor
resolves), with its reference pages generated from the provider's config and the service's
OpenAPI schema; the links Airflow shows point into it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import docs_reference  # noqa: E402

from airflow_escalation.get_provider_info import DOCS_URL, get_provider_info  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built from a copy of docs/ (the generated pages never land in the checkout)."""
    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "docs", work / "docs", ignore=shutil.ignore_patterns("reference", "changelog.md"))
    assert docs_reference.main(work / "docs") == 0
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(work / "docs"), site_dir=str(work / "site"))
    (work / "mkdocs.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mkdocs")), "build", "--strict", "-f", str(work / "mkdocs.yml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return work


def test_the_site_builds_strictly_with_every_page(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["site_url"] == DOCS_URL
    for page in [
        "index.html",
        "quickstart/index.html",
        "service/index.html",
        "reference/configuration/index.html",
        "reference/rest-api/index.html",
        "changelog/index.html",
    ]:
        assert (site / "site" / page).is_file(), page
    # every how-to of docs/ is in the navigation
    listed = str(config["nav"])
    assert all(md.name in listed for md in (ROOT / "docs").glob("*.md"))


def test_configuration_reference_has_every_option(site):
    text = (site / "docs" / "reference" / "configuration.md").read_text()
    for section, spec in get_provider_info()["config"].items():
        for name in spec["options"]:
            assert f"### {name}" in text and f"AIRFLOW__{section.upper()}__{name.upper()}" in text


def test_rest_reference_has_every_route(site):
    from airflow_escalation.service.app import create_app

    text = (site / "docs" / "reference" / "rest-api.md").read_text()
    for path, methods in create_app().openapi()["paths"].items():
        for method in methods:
            assert f"## `{method.upper()} /escalation{path}`" in text


def test_links_airflow_shows_point_at_site_pages(site):
    """The config descriptions link pages of the site, not files of the repository."""
    described = str(get_provider_info()["config"])
    assert "docs/" not in described.replace(DOCS_URL, "")
    links = set(re.findall(re.escape(DOCS_URL) + r"[\w/-]*", described))
    assert links
    for link in links:
        page = link.removeprefix(DOCS_URL).strip("/")
        assert (site / "site" / page / "index.html").is_file(), link
