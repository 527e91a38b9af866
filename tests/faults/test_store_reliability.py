"""Store faults of issue #23 (docs/reliability.md, "## Store"): a model in use is never
deleted or evicted, temps of dead processes are reclaimed at once, names and options are
checked before anything is published, and the messages say what to do."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.store import Store, UnsafeNameError, lease, lease_file
from llcuda_tui.core.store._base import INGESTING
from llcuda_tui.core.store._layout import check_name
from llcuda_tui.core.store._maint import set_max_size
from llcuda_tui.core.store._space import space_margin
from tests.storekit import ROOT, copy_of


def llcuda(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI as a user's terminal runs it (LLCUDA_HOME from the test's environment)."""
    return subprocess.run(
        [sys.executable, "-m", "llcuda_tui", *args],
        cwd=ROOT, env=os.environ.copy(), text=True, capture_output=True, timeout=timeout,
    )  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc.stderr


def dead_pid() -> int:
    """The pid of a process that has exited (a kill -9'd importer, as far as the store sees)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- 1. leases: rm, gc and the cap see every engine load ---------------------------------------


@pytest.mark.timeout(180)
def test_rm_refuses_a_model_a_worker_serves_and_force_only_unnames(
    store: Store, tiny_gguf: Path, tmp_path: Path, worker_process
) -> None:
    entry = store.import_path(copy_of(tiny_gguf, tmp_path), name="tiny")
    blob = store.layout.blob(entry.sha256)
    w = worker_process.start("-m", "tiny", "--ctx", "256", "--threads", "1", "--parallel", "1")

    refused = llcuda("models", "rm", "tiny")
    assert f"in use by process {w.proc.pid}" in one_line_error(refused)
    assert store.lookup("tiny") == "tiny" and blob.exists()

    forced = llcuda("models", "rm", "tiny", "--force")
    assert forced.returncode == 0, forced.stderr
    assert store.lookup("tiny") is None and blob.exists()  # unnamed only
    assert llcuda("models", "gc", "--grace", "0").returncode == 0
    assert blob.exists() and store.layout.manifest(entry.digest).exists()  # still leased

    w.kill()
    assert llcuda("models", "gc", "--grace", "0").returncode == 0
    assert not blob.exists()  # its user is gone: gc frees it


def test_lease_file_holds_store_files_and_ignores_others(
    store: Store, models, tmp_path: Path
) -> None:
    entry = store.import_path(copy_of(models["a"], tmp_path), name="a")
    with lease_file(entry.path, store.paths) as held:
        assert held == {entry.digest}
        assert store.users(entry.digest) == [os.getpid()]
    assert store.users(entry.digest) == []
    with lease_file(models["b"], store.paths) as held:  # a file outside the store
        assert held == set()


# --- 2. the cap never evicts a leased model, and every evicting command says so -----------------


def test_import_says_what_it_evicted_and_never_evicts_a_leased_model(
    llcuda_home: Path, models, tmp_path: Path
) -> None:
    settings = Settings.load(Paths.from_env())
    a, b, c = (copy_of(models[k], tmp_path) for k in "abc")
    size = a.stat().st_size
    set_max_size(settings, str(int(size * 1.5)))  # room for one model
    assert llcuda("models", "import", str(a), "--name", "a").returncode == 0
    imported = llcuda("models", "import", str(b), "--name", "b")
    assert imported.returncode == 0, imported.stderr
    assert "evicted a (store.max_size)" in imported.stderr

    store = Store.from_settings(Settings.load(Paths.from_env()))
    with lease("b", store.paths):
        refused = llcuda("models", "import", str(c), "--name", "c")
        assert "pinned or in use" in one_line_error(refused)
    assert store.lookup("b") == "b" and store.lookup("c") is None


# --- 10. temps of dead processes, the margin ----------------------------------------------------


def test_gc_reclaims_a_dead_importers_temp_at_once(store: Store, models, tmp_path) -> None:
    store.import_path(copy_of(models["a"], tmp_path), name="a")
    temp = store.layout.tmp / f"import-{dead_pid()}-0123abcd.part"
    temp.write_bytes(b"x" * (1 << 20))
    mine = store.layout.tmp / f"import-{os.getppid()}-0123abcd.part"  # a live writer's
    mine.write_bytes(b"y")
    report = store.gc()  # the default grace (an hour)
    assert not temp.exists() and mine.exists()
    assert report.freed_bytes >= 1 << 20


def test_space_margin_is_scaled_for_small_imports() -> None:
    assert space_margin(558 << 10) == 1 << 20  # a 558 KiB model needs 1 MiB spare, not 64
    assert space_margin(10 << 30) == 64 << 20


# --- 11. a hardlinked import leaves the user's file alone ---------------------------------------


def test_hardlinked_import_keeps_the_users_file_mode(store: Store, models, tmp_path) -> None:
    src = copy_of(models["a"], tmp_path)
    os.chmod(src, 0o640)
    entry = store.import_path(src, name="a")
    assert os.path.samefile(store.layout.blob(entry.sha256), src)
    assert stat.S_IMODE(src.stat().st_mode) == 0o640
    # a killed import's leftover link counts as no space in du
    os.link(src, store.layout.tmp / f"import-{dead_pid()}-0123abcd.part")
    assert store.du()["partial_bytes"] == 0


# --- 12. gc --grace 0 during an import -----------------------------------------------------------


def test_gc_grace_0_keeps_blobs_an_import_has_not_published_yet(
    store: Store, models, tmp_path
) -> None:
    src = copy_of(models["a"], tmp_path)
    with store.hold({INGESTING}):  # what import_path holds between blob and manifest
        sha = store.ingest_file(src)
        store.gc(grace_s=0)
        assert store.layout.blob(sha).exists()
    store.gc(grace_s=0)
    assert not store.layout.blob(sha).exists()  # unpublished and no importer: garbage


# --- 13. names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny\n", "@" * 199, ""])
def test_bad_names_are_refused_before_anything_is_published(
    store: Store, models, tmp_path, name: str
) -> None:
    with pytest.raises(UnsafeNameError) as err:
        store.import_path(copy_of(models["a"], tmp_path), name=name)
    assert len(str(err.value)) < 200
    assert not store.exists() or not any(store.layout.blobs.iterdir())
    assert not store.exists() or not any(store.layout.manifests.iterdir())


def test_check_name_takes_the_longest_safe_name() -> None:
    assert check_name("a" * 200) == "a" * 200


def test_empty_name_on_the_command_line_is_an_error(models, tmp_path) -> None:
    proc = llcuda("models", "import", str(copy_of(models["a"], tmp_path)), "--name", "")
    assert "cannot name a model" in one_line_error(proc)


# --- 14. bad options: one line, not "internal error" --------------------------------------------


def test_show_refuses_an_unknown_kv_type(store: Store, models, tmp_path) -> None:
    store.import_path(copy_of(models["a"], tmp_path), name="a")
    proc = llcuda("models", "show", "a", "--kv-type", "bogus")
    assert "--kv-type 'bogus'" in one_line_error(proc)


def test_adopt_refuses_a_cache_that_is_not_a_directory() -> None:
    proc = llcuda("models", "adopt", "--hf-cache", "/dev/zero")
    assert "not a directory" in one_line_error(proc)


# --- 18. blobs/ on another filesystem ------------------------------------------------------------


def test_blobs_on_another_filesystem_says_how_to_fix_it(store: Store, models, tmp_path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem")
    store.ensure()
    elsewhere = Path(tempfile.mkdtemp(dir=shm))
    try:
        store.layout.blobs.rmdir()
        store.layout.blobs.symlink_to(elsewhere)
        proc = llcuda("models", "import", str(copy_of(models["a"], tmp_path)))
        assert "different filesystems" in one_line_error(proc)
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


# --- 3. two TUIs on one home: a conversation deleted in the other ---------------------------------


@pytest.mark.timeout(180)
def test_a_reply_to_a_conversation_deleted_elsewhere_fails_loudly(
    llcuda_home: Path, smollm_path: Path, cpu_threads: int
) -> None:
    from llcuda_tui.core.chat import ChatSession, Phase
    from llcuda_tui.core.conversations import ChatSettings, ConversationStore
    from llcuda_tui.core.engine import Engine, EngineConfig
    from llcuda_tui.core.store import ModelChoice

    class Holder:
        engine: Engine | None = None
        engine_choice: ModelChoice | None = None

    mine, other = (ConversationStore.open(Paths.from_env()) for _ in range(2))
    config = EngineConfig(smollm_path, n_gpu_layers=0, n_ctx=256, n_threads=cpu_threads)
    with Engine.load(config) as engine:
        holder = Holder()
        holder.engine = engine
        holder.engine_choice = ModelChoice("smollm", smollm_path, None, "Q4_1", 1, "starter")
        greedy = ChatSettings(temperature=0.0, max_tokens=8)
        session = ChatSession(mine, holder, default_settings=lambda: greedy)
        session.start_reply(session.begin_send("Say hello."))
        conv = session.conversation
        assert conv is not None and session.reply is not None
        other.delete(conv.id)  # the other window
        assert session.reply.handle is not None
        session.reply.handle.result(timeout=120)
        done = session.finish_reply()
    assert session.phase is Phase.IDLE and done.saved is None
    assert done.error is not None and "deleted" in str(done.error)
    assert other.conversations() == []  # nothing written behind the user's back
    with pytest.raises(UserInputError, match="deleted"):  # and the next turn says so too
        mine.add_message(conv.id, "user", "still there?")
    mine.close()
    other.close()


# --- 9. the index is derived data: commands work from the files when it cannot be used ---------


def test_an_index_that_cannot_be_opened_does_not_stop_ls_verify_or_loading(
    store: Store, models, tmp_path
) -> None:
    entry = store.import_path(copy_of(models["a"], tmp_path), name="a")
    index = store.layout.index_path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    index.mkdir()  # the attacker's "index.sqlite as a directory"
    listed = llcuda("models", "ls")
    assert listed.returncode == 0 and "a " in listed.stdout, listed.stderr
    assert llcuda("models", "verify").returncode == 0
    assert llcuda("models", "pin", "a").returncode == 0
    from llcuda_tui.core.store import resolve_name

    found = resolve_name("a", store.paths)
    assert found is not None and found[1] == entry.sha256
    refused = llcuda("models", "reindex")
    assert "is a directory" in one_line_error(refused)
    index.rmdir()
    assert llcuda("models", "reindex").returncode == 0
    assert Store(store.paths).entry("a").state.pinned


# --- 9 on real filesystems: a full disk, a read-only store ---------------------------------------
# The filesystems are real: a small tmpfs filled to the last byte, the same remounted read-only,
# and (without mount) an ext4 store made immutable with chattr +i. Each needs root; where it is
# not allowed, the test says why it skips.


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block; unmounted after (lazily if a
    process still holds a file in it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): "
                    f"{mounted.stderr.strip()}")  # fmt: skip
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_disk(mount: Path, name: str = "filler") -> Path:
    """Write a file until the filesystem has not one byte left; the file, to free it later."""
    filler = mount / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, bytes(size))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                size //= 2
    finally:
        os.close(fd)
    assert os.statvfs(mount).f_bavail == 0
    return filler


def fill_disk_again(mount: Path) -> Path:
    return fill_disk(mount, "filler-2")


def the_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The one ``llcuda: error:`` line of a failed command (no traceback, no internal error)."""
    stderr = one_line_error(proc)
    errors = [line for line in stderr.splitlines() if line.startswith("llcuda: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def reads_work(entry_sha256: str, *, pinned: bool) -> None:
    """ls, show, verify and a real generation from the store, all exit 0."""
    listed = llcuda("models", "ls")
    assert listed.returncode == 0, listed.stderr
    assert "tiny " in listed.stdout and ("pinned" in listed.stdout) == pinned
    shown = llcuda("models", "show", "tiny")
    assert shown.returncode == 0 and entry_sha256 in shown.stdout, shown.stderr
    verified = llcuda("models", "verify")
    assert verified.returncode == 0 and "ok" in verified.stdout, verified.stderr
    ran = llcuda("infer", "-m", "tiny", "-p", "hi", "-n", "2", "--ctx", "128", "--threads", "1")
    assert ran.returncode == 0 and "2 generated" in ran.stderr, ran.stderr


@pytest.mark.timeout(300)
def test_a_full_disk_keeps_ls_show_verify_and_loading_working(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "disk", "8m") as disk:
        monkeypatch.setenv("LLCUDA_HOME", str(disk / "home"))
        store = Store(Paths.from_env())
        entry = store.import_path(tiny_gguf, name="tiny")  # a real import, copied to the tmpfs
        assert llcuda("models", "ls").returncode == 0  # the index file is written
        index = store.layout.index_path
        filler = fill_disk(disk)
        reads_work(entry.sha256, pinned=False)  # the index file as it was
        for suffix in ("", "-wal", "-shm"):
            Path(f"{index}{suffix}").unlink(missing_ok=True)
        more = fill_disk_again(disk)  # the index's pages were freed: take them too
        reads_work(entry.sha256, pinned=False)  # no index: one cannot be written on a full disk
        assert not index.exists() or index.stat().st_size == 0

        refused = the_error(llcuda("models", "pin", "tiny"))
        assert "disk full" in refused and "free some space" in refused
        assert "is full" in the_error(llcuda("models", "reindex"))
        imported = the_error(llcuda("models", "import", str(tiny_gguf), "--name", "again"))
        assert "not enough disk space: need" in imported and "0 B free" in imported
        # nothing half-written: no temp, the state unchanged, the names as they were
        assert [p.name for p in store.layout.tmp.iterdir()] == []
        assert store.lookup("again") is None
        assert not Store(store.paths).entry("tiny").state.pinned

        filler.unlink()  # space again: the index comes back, and so do writes
        more.unlink()
        assert llcuda("models", "reindex").returncode == 0 and index.is_file()
        assert llcuda("models", "pin", "tiny").returncode == 0
        assert Store(store.paths).entry("tiny").state.pinned


def _remount(where: Path, mode: str) -> None:
    done = subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], capture_output=True)
    assert done.returncode == 0, done.stderr


def _immutable(root: Path, on: bool) -> None:
    """``chattr +i`` (or ``-i``) on every folder and file under ``root`` (not the view links,
    which chattr cannot flag): even root can then neither create, write nor remove there."""
    paths = [root, *(p for p in root.rglob("*") if not p.is_symlink())]
    done = subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0 and on:
        _immutable(root, False)
        pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()[:200]}")


@contextlib.contextmanager
def read_only_home(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """A fresh LLCUDA_HOME and the two switches that make it read-only and writable again:
    a tmpfs remounted read-only (EROFS), or files and folders made immutable (EPERM)."""
    if how == "remount":
        with tmpfs(tmp_path / "ro", "16m") as mount:
            monkeypatch.setenv("LLCUDA_HOME", str(mount / "home"))
            try:
                yield (lambda: _remount(mount, "ro")), (lambda: _remount(mount, "rw"))
            finally:
                subprocess.run(["mount", "-o", "remount,rw", str(mount)], capture_output=True)
        return
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root (CAP_LINUX_IMMUTABLE)")
    home = tmp_path / "home"
    monkeypatch.setenv("LLCUDA_HOME", str(home))
    try:
        yield (lambda: _immutable(home, True)), (lambda: _immutable(home, False))
    finally:
        if home.exists():
            _immutable(home, False)  # or pytest could not remove tmp_path


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["remount", "immutable"])
def test_a_read_only_store_lists_shows_verifies_and_loads(
    how: str, tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with read_only_home(how, tmp_path, monkeypatch) as (make_read_only, make_writable):
        store = Store(Paths.from_env())
        entry = store.import_path(copy_of(tiny_gguf, tmp_path), name="tiny")
        assert llcuda("models", "pin", "tiny").returncode == 0  # and the index is written
        make_read_only()
        try:
            reads_work(entry.sha256, pinned=True)
            for args in (["models", "unpin", "tiny"], ["models", "rm", "tiny", "--force"],
                         ["models", "reindex"],
                         ["models", "import", str(tiny_gguf), "--name", "again"]):  # fmt: skip
                error = the_error(llcuda(*args))
                assert "the store is read-only" in error, (args, error)
            assert llcuda("models", "gc", "--grace", "0").returncode == 0  # nothing to free
        finally:
            make_writable()
        assert llcuda("models", "unpin", "tiny").returncode == 0
        assert not Store(store.paths).entry("tiny").state.pinned
        assert store.lookup("again") is None
        assert llcuda("models", "verify").returncode == 0


def test_the_tui_holds_a_lease_while_its_engine_is_loaded(
    settings: Settings, tiny_gguf: Path, tmp_path: Path, cpu_threads: int
) -> None:
    from llcuda_tui.core.engine import Engine, EngineConfig
    from llcuda_tui.core.store import ModelChoice
    from tests.tui.conftest import make_app

    store = Store(settings.paths)
    entry = store.import_path(copy_of(tiny_gguf, tmp_path), name="tiny")
    choice = ModelChoice("tiny", entry.path, entry.sha256, "F32", 1, "store")
    app = make_app(settings)
    config = EngineConfig(entry.path, n_gpu_layers=0, n_ctx=128, n_threads=cpu_threads)
    engine = Engine.load(config)
    app.set_engine(engine, choice)  # what the Chat screen does once a load finished
    assert store.users(entry.digest) == [os.getpid()]
    refused = llcuda("models", "rm", "tiny")
    assert f"in use by process {os.getpid()}" in one_line_error(refused)
    app.release_engine()  # unload (or a load of another model)
    assert store.users(entry.digest) == []
    app.conversations.close()
    assert llcuda("models", "rm", "tiny").returncode == 0
