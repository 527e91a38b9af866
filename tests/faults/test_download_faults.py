"""Faults while pulling from the Hub stand-in (tests/core/hubserver.py): a killed pull, a disk
that fills up, two processes pulling the same file. Each keeps what was downloaded, says so in
one line, and leaves a store that verifies and serves the model afterwards."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

from llcuda_tui import cli
from llcuda_tui.core.store import Store, StoreFullError, resolve_name
from llcuda_tui.core.store import _fs as storefs
from tests.core.hubserver import HubServer, sha256_hex
from tests.storekit import REPO, assert_consistent, downloads, pull_cli


@pytest.mark.timeout(60)
def test_resume_after_the_process_is_killed(server: HubServer, store: Store, files) -> None:
    path = "big-Q6_K.gguf"
    size = files[path].stat().st_size
    server.bytes_per_s = size / 6  # about six seconds for the whole file
    proc = pull_cli(REPO, "--quant", "Q6_K")
    tmp = store.layout.tmp
    deadline = time.monotonic() + 30
    partial = 0
    while time.monotonic() < deadline and partial < size // 4:
        time.sleep(0.05)
        parts = list(tmp.glob("*.part")) if tmp.is_dir() else []
        partial = max((p.stat().st_size for p in parts), default=0)
    proc.kill()
    proc.wait()
    assert size // 4 <= partial < size, "the pull was not caught mid-download"
    assert not store.names() and not list(store.layout.blobs.iterdir())
    assert_consistent(store)

    server.bytes_per_s = 0
    second = pull_cli(REPO, "--quant", "Q6_K", "--json")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "resuming" in err
    ranges = downloads(server, path)
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert resumed_at >= size // 4  # nothing already downloaded was fetched again
    entry = json.loads(out)
    assert entry["sha256"] == sha256_hex(files[path].read_bytes())
    assert entry["downloaded_bytes"] == size - resumed_at
    assert not list(tmp.glob("*.part"))
    assert_consistent(store)
    assert resolve_name(f"{REPO}:Q6_K", store.paths) is not None  # usable


def test_disk_full_mid_download_keeps_a_resumable_partial(
    server: HubServer, store: Store, files, monkeypatch, capsys
) -> None:
    written = 0
    real = storefs.write_all

    def fills_up(fd: int, data: bytes | memoryview) -> None:
        nonlocal written
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".part"):
            return real(fd, data)
        if written + len(data) > 100_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        written += len(data)
        real(fd, data)

    monkeypatch.setattr(storefs, "write_all", fills_up)
    with pytest.raises(StoreFullError, match=r"disk full while downloading big-Q6_K\.gguf"):
        store.pull(REPO, quant="Q6_K")
    assert not store.names() and not list(store.layout.blobs.iterdir())
    [part] = store.layout.tmp.glob("*.part")  # kept for the next pull
    assert part.stat().st_size == written > 0
    assert_consistent(store)
    assert cli.main(["models", "pull", REPO, "--quant", "Q6_K"]) == 1  # the CLI: one line
    errors = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert len(errors) == 1 and errors[0].startswith("llcuda: error: disk full while downloading")
    monkeypatch.setattr(storefs, "write_all", real)
    entry = store.pull(REPO, quant="Q6_K").entry
    assert downloads(server, "big-Q6_K.gguf")[-1] == f"bytes={written}-"
    assert entry.sha256 == sha256_hex(files["big-Q6_K.gguf"].read_bytes())
    assert_consistent(store)


@pytest.mark.timeout(60)
def test_two_processes_pulling_one_file_end_with_one_blob(
    server: HubServer, store: Store, files
) -> None:
    size = files["big-Q6_K.gguf"].stat().st_size
    server.bytes_per_s = size / 2
    first, second = pull_cli(REPO, "--quant", "Q6_K"), pull_cli(REPO, "--quant", "Q6_K")
    for proc in (first, second):
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    assert [p.name for p in store.layout.blobs.iterdir()] == [
        sha256_hex(files["big-Q6_K.gguf"].read_bytes())
    ]
    assert len(downloads(server, "big-Q6_K.gguf")) == 1  # the second waited for the lock
    assert not list(store.layout.tmp.glob("*.part"))
    assert_consistent(store)
    assert resolve_name(f"{REPO}:Q6_K", store.paths) is not None
