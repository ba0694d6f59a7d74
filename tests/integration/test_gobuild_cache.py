"""The Go builds are cached outside the checkout, keyed by version and wrapper module."""

from __future__ import annotations

import shutil

from leifur_dev import gobuild


def test_second_use_does_not_rebuild(monkeypatch):
    paths = {name: gobuild.ensure_built(name) for name in gobuild.COMPONENTS}
    mtimes = {name: p.stat().st_mtime_ns for name, p in paths.items()}

    def no_go():
        raise AssertionError("the Go toolchain was invoked although the binary is cached")

    monkeypatch.setattr(gobuild, "_go", no_go)
    for name in gobuild.COMPONENTS:
        assert gobuild.ensure_built(name) == paths[name]
        assert paths[name].stat().st_mtime_ns == mtimes[name]
    assert all(str(p).startswith(str(gobuild.cache_root())) for p in paths.values())


def test_cache_key_follows_version_and_module(tmp_path, monkeypatch):
    src = tmp_path / "controlplane"
    shutil.copytree(gobuild.source_root(), src)
    monkeypatch.setenv(gobuild.SOURCE_ENV, str(src))
    monkeypatch.setenv(gobuild.CACHE_ENV, str(tmp_path / "cache"))
    before = gobuild.binary_path("kube-apiserver")
    assert before.parent.name.startswith(f"kube-apiserver-{gobuild.component_version('kube-apiserver')}-")
    assert before.is_relative_to(tmp_path / "cache")
    assert gobuild.component_version("etcd").startswith("v3.6.")
    assert gobuild.component_version("kube-apiserver").startswith("v1.34.")

    with (src / "kubernetes" / "go.sum").open("a") as f:
        f.write("example.com/changed v1.0.0 h1:AAAA=\n")
    assert gobuild.binary_path("kube-apiserver") != before
    assert gobuild.binary_path("etcd").parent.name.startswith("etcd-v3.6.")
