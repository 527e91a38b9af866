"""Pulling from a local Hub stand-in (tests/core/hubserver.py): never the real Hub.

Covers pull, split shards, a server that ignores Range, corrupt content, unsafe names, offline
mode, tokens, the HF cache, and repair re-fetching one quarantined blob. Fixtures and helpers
are in tests/storekit.py; a killed pull, disk full and two concurrent pulls are in
tests/faults/test_download_faults.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llcuda_tui import cli
from llcuda_tui.core.config import Paths
from llcuda_tui.core.errors import PullCancelled, UserInputError
from llcuda_tui.core.store import (
    HfSource,
    IntegrityError,
    Store,
    StoreFullError,
    UnsafeNameError,
    resolve_name,
)
from llcuda_tui.core.store import _hub as hub
from llcuda_tui.core.store import _pull as storepull
from tests.core.hubserver import HubServer, sha256_hex
from tests.storekit import REPO, assert_consistent, downloads

# --- listing and pulling ----------------------------------------------------------------------


def test_files_groups_shards_and_shows_quant_and_sha(server: HubServer, files) -> None:
    commit = hub.resolve_commit(REPO)
    listing = hub.list_models(REPO, commit)
    by_quant = {m.quant: m for m in listing.models}
    assert sorted(by_quant) == ["Q2_K", "Q4_K_M", "Q6_K", "Q8_0"]
    split = by_quant["Q2_K"]
    assert len(split.files) == 3 and split.complete
    assert split.size == sum(files[f.path].stat().st_size for f in split.files)
    q4 = by_quant["Q4_K_M"].first
    assert q4.sha256 == sha256_hex(files["tiny-Q4_K_M.gguf"].read_bytes())


def test_cli_files_json(server: HubServer, capsys) -> None:
    assert cli.main(["models", "files", REPO, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["commit"] == server.repos[REPO].commit
    assert {m["quant"] for m in out["models"]} == {"Q2_K", "Q4_K_M", "Q6_K", "Q8_0"}


def test_pull_verifies_and_publishes(server: HubServer, store: Store, files) -> None:
    result = store.pull(REPO, quant="q4_k_m", name="tiny")
    data = files["tiny-Q4_K_M.gguf"].read_bytes()
    entry = result.entry
    assert entry.name == f"{REPO}:Q4_K_M" and entry.aliases == ("tiny",)
    assert entry.sha256 == sha256_hex(data) and result.downloaded_bytes == len(data)
    assert entry.manifest.source == HfSource(REPO, server.repos[REPO].commit, "main")
    assert entry.manifest.source.to_dict() == {"kind": "hf", "repo": REPO, "revision": "main",
                                               "commit": server.repos[REPO].commit}  # fmt: skip
    assert store.layout.blob(entry.sha256).read_bytes() == data
    assert resolve_name("tiny", store.paths) == (entry.path, entry.sha256)
    assert downloads(server, "tiny-Q4_K_M.gguf") == [None]
    again = store.pull(REPO, quant="Q4_K_M")
    assert again.up_to_date and downloads(server, "tiny-Q4_K_M.gguf") == [None]
    assert not list(store.layout.tmp.iterdir())
    assert_consistent(store)


def test_pull_split_model_loads_by_shard_names(server: HubServer, store: Store) -> None:
    entry = store.pull(REPO, file="split/tiny-Q2_K-00002-of-00003.gguf").entry
    names = sorted(p.name for p in entry.path.parent.iterdir())
    assert names == [f"tiny-Q2_K-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert entry.path.name == names[0]
    assert entry.manifest.gguf["split_count"] == 3
    pytest.importorskip("llama_cpp")
    code = (
        "import llama_cpp, sys; m = llama_cpp.Llama(sys.argv[1], n_ctx=64, n_gpu_layers=0, "
        "verbose=False); print(m.n_vocab())"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(entry.path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "512"


def test_pull_needs_a_choice_when_the_repo_has_several(server: HubServer, store: Store) -> None:
    with pytest.raises(UserInputError, match="choose --quant"):
        store.pull(REPO)
    with pytest.raises(hub.HubNotFoundError, match=r"quants: Q2_K, Q4_K_M"):
        store.pull(REPO, quant="IQ1_S")
    with pytest.raises(hub.HubNotFoundError, match="no repository"):
        store.pull("acme/nothing", quant="Q4_K_M")
    with pytest.raises(hub.HubNotFoundError, match="no revision"):
        store.pull(REPO, quant="Q4_K_M", revision="v9")


def test_pull_pins_a_revision_to_its_commit(server: HubServer, store: Store, files) -> None:
    old_commit = server.repos[REPO].commit
    entry = store.pull(REPO, quant="Q8_0", revision=old_commit).entry
    assert isinstance(entry.manifest.source, HfSource)
    assert entry.manifest.source.commit == old_commit
    assert entry.manifest.source.revision == old_commit


# --- failures ---------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leave_partial(store: Store, sha: str, data: bytes) -> Path:
    """A partial download as a killed process leaves it."""
    store.ensure()
    part = store.layout.tmp / f"{sha}.{dead_pid()}-0badf00d.part"
    part.write_bytes(data)
    return part


def test_server_ignoring_range_restarts_cleanly(server: HubServer, store: Store, files) -> None:
    data = files["tiny-Q8_0.gguf"].read_bytes()
    _leave_partial(store, sha256_hex(data), data[: len(data) // 2])
    server.ignore_range = True
    messages: list[str] = []
    entry = store.pull(REPO, quant="Q8_0", on_status=messages.append).entry
    assert downloads(server, "tiny-Q8_0.gguf") == [f"bytes={len(data) // 2}-"]
    assert any("ignored the Range" in m for m in messages)
    assert store.layout.blob(entry.sha256).read_bytes() == data
    assert_consistent(store)


def test_a_damaged_partial_is_downloaded_again(server: HubServer, store: Store, files) -> None:
    data = files["tiny-Q8_0.gguf"].read_bytes()
    _leave_partial(store, sha256_hex(data), b"\0" * (len(data) // 3))
    entry = store.pull(REPO, quant="Q8_0").entry
    assert downloads(server, "tiny-Q8_0.gguf") == [f"bytes={len(data) // 3}-", None]
    assert store.layout.blob(entry.sha256).read_bytes() == data


def test_a_cancel_event_stops_the_pull_and_the_next_pull_resumes(
    server: HubServer, store: Store, files
) -> None:
    path = "big-Q6_K.gguf"
    size = files[path].stat().st_size
    server.bytes_per_s = size / 4
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:  # sets the event; raising is not needed
        if done >= size // 4:
            cancel.set()

    with pytest.raises(PullCancelled, match="pull it again to resume"):
        store.pull(REPO, quant="Q6_K", on_progress=progress, cancel=cancel)
    parts = list(store.layout.tmp.glob("*.part"))
    assert len(parts) == 1 and size // 4 <= parts[0].stat().st_size < size
    assert not store.names()
    server.bytes_per_s = 0
    messages: list[str] = []
    entry = store.pull(REPO, quant="Q6_K", on_status=messages.append).entry
    assert any(m.startswith("resuming big-Q6_K.gguf") for m in messages), messages
    assert downloads(server, path)[-1].startswith("bytes=")
    assert entry.sha256 == sha256_hex(files[path].read_bytes())


def test_a_dropped_connection_resumes_in_the_same_run(
    server: HubServer, store: Store, files
) -> None:
    server.drop_after = 64 << 10
    messages: list[str] = []
    entry = store.pull(REPO, quant="Q6_K", on_status=messages.append).entry
    ranges = downloads(server, "big-Q6_K.gguf")
    assert ranges[0] is None and any(r and r.startswith("bytes=") for r in ranges[1:])
    assert entry.sha256 == sha256_hex(files["big-Q6_K.gguf"].read_bytes())


def test_corrupt_content_is_rejected_and_nothing_published(
    server: HubServer, store: Store, capsys
) -> None:
    server.corrupt = {"tiny-Q4_K_M.gguf"}
    with pytest.raises(IntegrityError, match=r"corrupt.*nothing was stored"):
        store.pull(REPO, quant="Q4_K_M")
    assert not store.names() and not list(store.layout.blobs.iterdir())
    assert not list(store.layout.tmp.iterdir()) and not list(store.layout.manifests.iterdir())
    assert cli.main(["models", "pull", REPO, "--quant", "Q4_K_M"]) == 1
    errors = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert len(errors) == 1  # progress lines aside, one line
    assert errors[0].startswith("llcuda: error: tiny-Q4_K_M.gguf from acme/tiny-llama is corrupt")
    assert_consistent(store)


def test_cap_too_small_fails_before_downloading(server: HubServer, llcuda_home: Path) -> None:
    store = Store(Paths.from_env(), max_size=1000)
    with pytest.raises(StoreFullError, match="max_size"):
        store.pull(REPO, quant="Q4_K_M")
    assert downloads(server, "tiny-Q4_K_M.gguf") == []


def test_pull_evicts_lru_beyond_the_cap(server: HubServer, llcuda_home: Path, files) -> None:
    size = files["tiny-Q4_K_M.gguf"].stat().st_size
    store = Store(Paths.from_env(), max_size=int(size * 2.5))
    store.pull(REPO, quant="Q4_K_M")
    store.pull(REPO, quant="Q8_0")
    resolve_name(f"{REPO}:Q4_K_M", store.paths)  # used more recently than Q8_0
    result = store.pull(REPO, file="split/tiny-Q2_K-00001-of-00003.gguf")
    assert result.evicted == (f"{REPO}:Q8_0",)
    assert sorted(store.names()) == [f"{REPO}:Q2_K", f"{REPO}:Q4_K_M"]
    assert_consistent(store)


# --- concurrency ------------------------------------------------------------------------------


def test_correctness_does_not_depend_on_the_lock(
    server: HubServer, store: Store, files, monkeypatch
) -> None:
    @contextlib.contextmanager
    def no_lock(*_args: object) -> Iterator[None]:
        yield

    monkeypatch.setattr(storepull, "_blob_lock", no_lock)
    server.bytes_per_s = files["tiny-Q8_0.gguf"].stat().st_size / 1.5
    errors: list[BaseException] = []

    def run() -> None:
        try:
            store.pull(REPO, quant="Q8_0")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(downloads(server, "tiny-Q8_0.gguf")) == 2  # both downloaded: no lock
    assert len(list(store.layout.blobs.iterdir())) == 1
    assert not list(store.layout.tmp.glob("*.part"))
    assert_consistent(store)


# --- names, offline, tokens -------------------------------------------------------------------


def test_unsafe_names_from_the_server_are_rejected(server: HubServer, store: Store, files) -> None:
    data = files["tiny-Q8_0.gguf"]
    server.add_repo(
        "evil/repo", {"../escape.gguf": data, "ok/../../x.gguf": data, "fine.gguf": data}
    )
    listing = hub.list_models("evil/repo", hub.resolve_commit("evil/repo"))
    assert [m.first.path for m in listing.models] == ["fine.gguf"]
    assert sorted(listing.rejected) == ["../escape.gguf", "ok/../../x.gguf"]
    for bad in ("../escape.gguf", "/etc/passwd.gguf", "a\\b.gguf"):
        with pytest.raises(UnsafeNameError):
            store.pull("evil/repo", file=bad)
    assert store.pull("evil/repo", file="fine.gguf").entry.name.startswith("evil/repo:")


def test_offline_mode_uses_the_store_and_never_the_network(
    server: HubServer, store: Store, capsys, monkeypatch
) -> None:
    store.pull(REPO, quant="Q4_K_M")
    seen = len(server.log)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert store.pull(REPO, quant="Q4_K_M").up_to_date
    with pytest.raises(hub.OfflineError, match="not in the store"):
        store.pull(REPO, quant="Q8_0")
    assert cli.main(["models", "files", REPO]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llcuda: error: HF_HUB_OFFLINE is set") and err.count("\n") == 1
    assert len(server.log) == seen


def test_token_is_sent_but_never_stored(server: HubServer, store: Store, monkeypatch) -> None:
    server.token = "hf_secret_test_token"
    server.redirect = True
    with pytest.raises(hub.HubError, match="HTTP 401"):
        store.pull(REPO, quant="Q4_K_M")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_test_token")
    store.pull(REPO, quant="Q4_K_M")
    cdn = server.requests("GET", contains="/cdn/")
    assert cdn and all("authorization" not in r.headers for r in cdn)  # not sent off the Hub
    for f in store.layout.root.rglob("*"):
        if f.is_file() and not f.is_relative_to(store.layout.blobs):
            assert b"hf_secret_test_token" not in f.read_bytes(), f


# --- HF cache and repair ----------------------------------------------------------------------


def test_adopt_hf_cache_hardlinks_verified_files(
    server: HubServer, store: Store, files, tmp_path, capsys
) -> None:
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "hf-cache"
    commit = server.repos[REPO].commit
    for name in ("tiny-Q8_0.gguf", *(f"split/tiny-Q2_K-0000{i}-of-00003.gguf" for i in (1, 2, 3))):
        hf_hub_download(REPO, name, cache_dir=cache, endpoint=server.url, revision=commit)
    assert cli.main(["models", "adopt", "--hf-cache", str(cache), "--json"]) == 0
    results = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert results == {f"{REPO}:Q8_0": "adopted", f"{REPO}:Q2_K": "adopted"}
    entry = store.entry(f"{REPO}:Q8_0")
    blob = store.layout.blob(entry.sha256)
    hf_blob = next((cache / "models--acme--tiny-llama" / "blobs").glob(entry.sha256))
    assert os.path.samefile(blob, hf_blob)  # no copy
    assert isinstance(entry.manifest.source, HfSource) and entry.manifest.source.commit == commit
    assert entry.manifest.source.adopted_from == "hf-cache"
    assert cli.main(["models", "adopt", "--hf-cache", str(cache), "--json"]) == 0
    again = {r["status"] for r in json.loads(capsys.readouterr().out)}
    assert again == {"already in the store"}
    assert_consistent(store)


def test_adopt_skips_a_corrupt_cache_file(server: HubServer, store: Store, tmp_path) -> None:
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "hf-cache"
    path = Path(hf_hub_download(REPO, "tiny-Q4_K_M.gguf", cache_dir=cache, endpoint=server.url))
    blob = path.resolve()
    with open(blob, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xff\xff")
    results = store.adopt_hf_cache(cache)
    assert len(results) == 1 and results[0]["status"].startswith("skipped")
    assert not store.names() and not list(store.layout.blobs.iterdir())


def test_repair_refetches_only_the_quarantined_blob(server: HubServer, store: Store, files) -> None:
    split = store.pull(REPO, file="split/tiny-Q2_K-00001-of-00003.gguf").entry
    second = split.manifest.files[1]
    blob = store.layout.blob(second.sha256)
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as fh:
        fh.write(b"XXXX")
    with pytest.raises(IntegrityError, match="damaged"):
        resolve_name(f"{REPO}:Q2_K", store.paths)
    before = len(server.requests("GET", contains="/resolve/"))
    report = store.repair()
    assert report.ok and len(report.actions) == 1
    fetched = server.requests("GET", contains="/resolve/")[before:]
    assert [r.path.rpartition("/")[2] for r in fetched] == [second.filename]
    assert resolve_name(f"{REPO}:Q2_K", store.paths) is not None
    assert_consistent(store)


def test_pulling_a_new_commit_replaces_the_old_version(
    server: HubServer, store: Store, files
) -> None:
    old = store.pull(REPO, quant="Q4_K_M").entry
    server.add_repo(REPO, {"tiny-Q4_K_M.gguf": files["tiny-Q8_0.gguf"]})  # a new commit
    new = store.pull(REPO, quant="Q4_K_M").entry
    assert isinstance(new.manifest.source, HfSource) and isinstance(old.manifest.source, HfSource)
    assert new.manifest.source.commit != old.manifest.source.commit
    assert not store.layout.blob(old.sha256).exists()  # no other name used it
    assert [p.name for p in store.layout.blobs.iterdir()] == [new.sha256]
    assert_consistent(store)
