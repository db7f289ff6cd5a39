"""The docs that are generated from the model are current, and the README's links resolve."""

from __future__ import annotations

import re

from wizard.docs import reference_markdown, schema_text

from conftest import ROOT


def test_reference_is_generated_from_the_current_model():
    assert (ROOT / "docs" / "reference.md").read_text() == reference_markdown(), "run: make docs"
    assert (ROOT / "docs" / "config.schema.json").read_text() == schema_text(), "run: make docs"


def test_reference_covers_every_section():
    text = reference_markdown()
    for section in ["deployment", "application", "application.execution", "resources", "resources.storage", "image",
                    "inference", "inference.route", "inference.autoscaling", "batch", "monitoring",
                    "experiment.tracking", "experiment.sweep", "secrets"]:
        assert f"## `{section}`" in text, section


def test_links_in_readme_and_docs_resolve():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"
