"""The Helm chart shares its CRDs and its monitoring files with deploy/ through symbolic links,
not copies (helm follows them when it loads or packages the chart: integration/test_helm_chart.py);
and it ships the programs' version."""

from __future__ import annotations

from pathlib import Path

import yaml

import leifur

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "leifur"


def test_the_charts_crds_and_monitoring_files_are_deploys():
    for link, target in (("crds", "deploy/crds"), ("files/monitoring", "deploy/monitoring")):
        path = CHART / link
        assert path.is_symlink(), f"charts/leifur/{link} must be a link to {target}, not a copy"
        assert path.resolve() == (ROOT / target).resolve()
        # Relative, so that it holds in any checkout.
        assert not Path(path.readlink()).is_absolute()


def test_the_chart_ships_the_programs_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == leifur.__version__
    assert chart["apiVersion"] == "v2"  # installable by Helm 3 and Helm 4
