"""A gallery never loses work: faults at every write step, in real child processes on real files.

Each case starts from a saved 20-image gallery of 7 products (the issue's size), runs one write (build over it,
add, remove) in a child process that dies (SIGKILL) or fails (a file-size limit) at one step, then loads the
gallery here: it must answer exactly as before the write or as after it, never raise.
"""
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("faiss")

from prodrec.gallery import GalleryFolder, GalleryIndex  # noqa: E402

DIM = 8

# The child: apply a fault, then run one write. Steps are the gallery's durable writes, in order: the new
# generation's index.faiss, meta.npz, meta.json, then CURRENT; ``cleanup`` is the removal of old generations.
CHILD = r"""
import os, resource, signal, sys
import numpy as np
from prodrec.gallery import GalleryIndex, folder as folder_module, store
from prodrec.utils import ProdrecError

fault, step, operation, directory = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
if fault == "kill":
    calls = []
    def dying(module):
        real = module.atomic_write
        def write(path, fill, **options):
            calls.append(path)
            if step == f"before{len(calls)}":
                os.kill(os.getpid(), signal.SIGKILL)
            if step == f"during{len(calls)}":  # the temporary file exists, half written
                def half(temporary):
                    temporary.write_bytes(b"partial")
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(path, half, **options)
            return real(path, fill, **options)
        module.atomic_write = write
    dying(store)
    dying(folder_module)
    if step == "cleanup":
        clean = folder_module.GalleryFolder._clean
        def dying_clean(self, count=[]):
            count.append(1)
            if len(count) == 2:  # the first cleans before the write, the second after the switch
                os.kill(os.getpid(), signal.SIGKILL)
            clean(self)
        folder_module.GalleryFolder._clean = dying_clean
elif fault == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(step), int(step)))

rng = np.random.default_rng(1)
try:
    if operation == "add":
        with GalleryIndex.update(directory) as gallery:
            gallery.add(rng.standard_normal((10, 8)), [f"new-{i % 3}" for i in range(10)])
    elif operation == "remove":
        with GalleryIndex.update(directory) as gallery:
            gallery.remove(label="sku-0")
    else:
        fresh = GalleryIndex(8)
        fresh.add(rng.standard_normal((3, 8)), ["other-0", "other-1", "other-2"])
        fresh.save(directory)
except ProdrecError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
"""


def saved_gallery(directory):
    gallery = GalleryIndex(DIM)
    gallery.add(np.random.default_rng(0).standard_normal((20, DIM)), [f"sku-{i % 7}" for i in range(20)])
    gallery.save(directory)
    return gallery


def answers(gallery):
    queries = np.random.default_rng(2).standard_normal((12, DIM))
    found = gallery.search(queries, k=4)
    return found.ids.tolist(), found.labels.tolist(), np.round(found.scores, 5).tolist()


def expected_after(operation, before):
    rng = np.random.default_rng(1)
    if operation == "add":
        before.add(rng.standard_normal((10, DIM)), [f"new-{i % 3}" for i in range(10)])
        return before
    if operation == "remove":
        before.remove(label="sku-0")
        return before
    fresh = GalleryIndex(DIM)
    fresh.add(rng.standard_normal((3, DIM)), ["other-0", "other-1", "other-2"])
    return fresh


def run_child(fault, step, operation, directory):
    return subprocess.run([sys.executable, "-c", CHILD, fault, step, operation, str(directory)], capture_output=True,
                          text=True, timeout=120)


STEPS = ["before1", "during1", "before2", "during2", "before3", "during3", "before4", "during4", "cleanup"]
# A child imports prodrec (~5 s): the default run covers each kind of step once; -m slow runs them all.
FAST_KILLS = {("add", "during2"), ("add", "before4"), ("add", "cleanup"), ("remove", "during3"), ("build", "during1"),
              ("build", "during4")}
LIMITS = (64, 600, 1500, 4000)  # below each file's size in turn (CURRENT is 11 bytes)
FAST_LIMITS = {("add", 600), ("build", 64)}


def cases(steps, fast):
    return [pytest.param(operation, step, marks=() if (operation, step) in fast else pytest.mark.slow)
            for operation in ("add", "remove", "build") for step in steps]


@pytest.mark.parametrize("operation, step", cases(STEPS, FAST_KILLS))
def test_a_write_killed_at_any_step_leaves_the_old_or_the_new_gallery(tmp_path, operation, step):
    directory = tmp_path / "gallery"
    before = answers(saved_gallery(directory))
    after = answers(expected_after(operation, GalleryIndex.load(directory)))
    child = run_child("kill", step, operation, directory)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert answers(GalleryIndex.load(directory)) == (after if step == "cleanup" else before)
    with GalleryIndex.update(directory) as gallery:  # the next write cleans up and works
        gallery.add(np.ones((1, DIM)), ["later"])
    assert len([p for p in directory.iterdir() if p.name.startswith("gen-")]) == 2
    assert not list(directory.rglob("*.tmp"))


@pytest.mark.parametrize("operation, limit", cases(LIMITS, FAST_LIMITS))
def test_a_file_size_limit_fails_in_one_line_and_changes_nothing(tmp_path, operation, limit):
    directory = tmp_path / "gallery"
    before = answers(saved_gallery(directory))
    child = run_child("fsize", str(limit), operation, directory)
    if child.returncode == 0:  # every file of the new generation fitted
        assert limit >= 1500, child.stderr
        return
    assert child.returncode == 3, child.stderr
    message = child.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "could not save the gallery" in message and "file-size limit (ulimit -f)" in message
    assert "the gallery is unchanged (still gen-000001)" in message
    assert answers(GalleryIndex.load(directory)) == before
    assert sorted(p.name for p in directory.iterdir()) == ["CURRENT", "gen-000001", "write.lock"]


ADD_PRODUCTS = r"""
import sys, numpy as np
from prodrec.gallery import GalleryIndex
number = int(sys.argv[2])
with GalleryIndex.update(sys.argv[1]) as gallery:
    gallery.add(np.random.default_rng(number).standard_normal((10, 8)), [f"writer{number}-{i % 2}" for i in range(10)])
"""


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_writers_lose_nothing_and_readers_never_fail(tmp_path, writers):
    directory = tmp_path / "gallery"
    saved_gallery(directory)
    failures, loads, stop = [], [0], threading.Event()

    def read():
        while not stop.is_set():
            try:
                GalleryIndex.load(directory).search(np.ones((1, DIM)), k=3)
                loads[0] += 1
            except Exception as error:  # any failure at all is the bug this test looks for
                failures.append(repr(error))

    reader = threading.Thread(target=read)
    reader.start()
    children = [subprocess.Popen([sys.executable, "-c", ADD_PRODUCTS, str(directory), str(number)],
                                 stderr=subprocess.PIPE, text=True) for number in range(writers)]
    errors = [child.communicate(timeout=120)[1] for child in children]
    stop.set()
    reader.join()
    assert all(child.returncode == 0 for child in children), errors
    assert not failures and loads[0] > 0
    gallery = GalleryIndex.load(directory)
    assert len(gallery) == 20 + 10 * writers and len(set(gallery.ids.tolist())) == len(gallery)
    assert {f"writer{n}-{i}" for n in range(writers) for i in range(2)} <= set(gallery.labels)


def test_a_second_writer_waits_or_is_refused_naming_the_holder(tmp_path):
    directory = tmp_path / "gallery"
    saved_gallery(directory)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom prodrec.gallery import GalleryFolder\n"
                               "with GalleryFolder(sys.argv[1]).writing():\n    print('held', flush=True)\n"
                               "    time.sleep(3)\n", str(directory)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    from prodrec.utils import LockBusy

    with pytest.raises(LockBusy, match=rf"another process \(pid {holder.pid}\) is writing the gallery"):
        with GalleryIndex.update(directory, wait=False):
            pass
    waited = []
    with GalleryIndex.update(directory, on_wait=waited.append) as gallery:
        gallery.add(np.ones((1, DIM)), ["after-the-holder"])
    assert waited == [str(holder.pid)] and holder.wait(timeout=30) == 0
    assert "after-the-holder" in set(GalleryIndex.load(directory).labels)


def test_threads_of_one_process_write_one_at_a_time(tmp_path):
    directory = tmp_path / "gallery"
    saved_gallery(directory)

    def add(number):
        with GalleryIndex.update(directory) as gallery:
            gallery.add(np.full((1, DIM), number + 1.0), [f"thread-{number}"])

    threads = [threading.Thread(target=add, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {f"thread-{n}" for n in range(4)} <= set(GalleryIndex.load(directory).labels)


def test_a_0_1_gallery_loads_and_is_upgraded_at_its_next_write(tmp_path):
    import shutil

    legacy = tmp_path / "legacy"
    saved_gallery(tmp_path / "new")
    shutil.copytree(tmp_path / "new" / "gen-000001", legacy)  # the three files at the top: 0.1's layout
    before = answers(GalleryIndex.load(legacy))
    assert GalleryFolder(legacy).generation() is None
    with GalleryIndex.update(legacy) as gallery:
        gallery.add(np.ones((1, DIM)), ["new"])
    assert sorted(p.name for p in legacy.iterdir()) == ["CURRENT", "gen-000001", "write.lock"]
    loaded = GalleryIndex.load(legacy)
    loaded.remove(label="new")
    assert answers(loaded) == before


def test_a_damaged_generation_says_how_to_recover(tmp_path):
    directory = tmp_path / "gallery"
    gallery = saved_gallery(directory)
    gallery.save(directory)
    meta = directory / "gen-000002" / "meta.npz"
    meta.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"meta\.npz is damaged .*make the previous generation current"):
        GalleryIndex.load(directory)
    (directory / "CURRENT").write_text("gen-000001\n")  # the recovery the message describes
    assert answers(GalleryIndex.load(directory)) == answers(gallery)


def test_a_save_inside_an_update_of_the_same_folder_is_refused_not_a_hang(tmp_path):
    from prodrec.utils import LockBusy

    directory = tmp_path / "gallery"
    saved_gallery(directory)
    with pytest.raises(LockBusy, match="this thread holds .*write.lock already"):
        with GalleryIndex.update(directory) as gallery:
            gallery.save(directory)
    with GalleryIndex.update(directory) as gallery:  # the lock was released
        gallery.add(np.ones((1, DIM)), ["after"])
