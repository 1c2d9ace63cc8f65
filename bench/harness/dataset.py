"""Deterministic, realistic file tree for the file benchmarks (``files.py``, ``protect.py``);
its ``TextSource`` also fills the generated disk images (``disk_image.py``).

The data set mimics what a backup tool sees on a developer's or a small server's disk:

* ``source/``: ~25 %: real text files (headers, Python modules, JSON, docs...) copied from
  ``/usr/include``, ``/usr/share`` and ``/usr/lib``; the selection is recorded in a manifest so
  that a regeneration uses the same files; if the machine has too few, synthetic source-like
  text files top it up.
* ``small/``: ~10 %: thousands of small files (1-64 KiB): notes, logs, JSON, CSV, a few
  binary blobs and a few exact duplicates.
* ``compressed/``: ~20 %: already-compressed data: gzip-compressed text (``.gz``) and
  incompressible media-like files (``.jpg``, ``.mp4``, ``.zip``...).
* ``random/``: ~20 %: random data files (1-32 MiB).
* ``large/disk.img``: ~25 %: one large file mixing text, random data, zero runs and repeated
  segments, like a VM image or a database file.
* ``misc/``: empty files, an empty directory, symlinks and non-ASCII names.

Everything but the copied files is generated from seeded ``random.Random`` instances (one per
category), so the same size and seed always give byte-identical trees.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import stat
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.workspace import GIB, KIB, MIB, iter_files

DATASET_VERSION = 2
DEFAULT_SEED = 20250101

SHARES: dict[str, float] = {
    "source": 0.25,
    "small": 0.10,
    "compressed": 0.20,
    "random": 0.20,
    "large": 0.25,
}


def _split(words: str) -> list[str]:
    return words.split()


SOURCE_ROOTS = ("/usr/include", "/usr/share", "/usr/lib")
SOURCE_EXTENSIONS = frozenset(
    _split(
        ".h .hpp .c .cc .cpp .py .pyi .pl .pm .txt .html .xml .json .js .css .sh .rst .md .tcl"
        " .rb .go .rs .java .ts .yaml .yml .cfg .ini .conf .svg .po .m4 .am .in .cmake .el .lua"
        " .tex .sql .mk .def .inc .csv .tsv .properties"
    )
)
SOURCE_MIN_BYTES = 64
SOURCE_MAX_BYTES = 1 * MIB


@dataclass
class CategoryStats:
    files: int = 0
    bytes: int = 0


@dataclass
class DatasetInfo:
    """What was generated: stored as ``dataset.json`` next to the tree."""

    version: int
    seed: int
    requested_bytes: int
    files: int
    bytes: int
    categories: dict[str, CategoryStats] = field(default_factory=dict)
    source_manifest: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> DatasetInfo:
        cats = raw.get("categories", {})
        assert isinstance(cats, dict)
        info = cls(**{k: v for k, v in raw.items() if k != "categories"})  # type: ignore[arg-type]
        info.categories = {k: CategoryStats(**v) for k, v in cats.items()}
        return info


@dataclass
class ChangeSummary:
    """What ``apply_change`` did to a tree."""

    bytes_written: int = 0
    files_modified: int = 0
    files_added: int = 0
    files_deleted: int = 0


# --------------------------------------------------------------------------- text


_SYLLABLES = _split(
    "a e i o u ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge gi go ha he hi"
    " ho ka ke ki ko la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro"
    " ru sa se si so su ta te ti to tu va ve vi vo za ze zo ex in on er st tr pr ch sh th ng"
)
_COMMON = _split(
    "the of and to in is that for it as with was on be by this are or from at which an not"
    " have has but all can if will one data file user value error return self none true false"
    " int char void struct const static def class import from list dict string buffer size"
)
_LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")


class TextSource:
    """Generates text that compresses like real text (Zipf-distributed vocabulary)."""

    def __init__(self, rng: random.Random, vocabulary: int = 6000, lines: int = 30000) -> None:
        words = list(_COMMON)
        while len(words) < vocabulary:
            words.append("".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))))
        self._words = words
        self._cum = _zipf_cumulative(len(words))
        self._lines = [self._line(rng) for _ in range(lines)]
        self._avg = sum(len(line) + 1 for line in self._lines) / len(self._lines)

    def _pick(self, rng: random.Random, count: int) -> list[str]:
        return rng.choices(self._words, cum_weights=self._cum, k=count)

    def _line(self, rng: random.Random) -> str:
        style = rng.random()
        if style < 0.40:
            words = self._pick(rng, rng.randint(4, 16))
            return " ".join(words).capitalize() + "."
        if style < 0.70:
            name, *args = self._pick(rng, rng.randint(2, 5))
            target = "_".join(self._pick(rng, 2))
            return f"{' ' * 4 * rng.randint(0, 3)}{target} = {name}({', '.join(args)})"
        if style < 0.85:
            ts = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}"
            msg = " ".join(self._pick(rng, rng.randint(3, 9)))
            return (
                f"{ts}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} {rng.choice(_LEVELS)}"
                f" [{self._pick(rng, 1)[0]}] {msg} id={rng.getrandbits(32):08x}"
            )
        if style < 0.95:
            return ",".join(str(rng.randint(0, 10 ** rng.randint(1, 6))) for _ in range(6))
        key = ".".join(self._pick(rng, 2))
        return f"{key} = {' '.join(self._pick(rng, rng.randint(1, 4)))}"

    def text(self, rng: random.Random, nbytes: int) -> bytes:
        """About ``nbytes`` of text (exactly ``nbytes``, cut at the end)."""
        if nbytes <= 0:
            return b""
        count = int(nbytes / self._avg) + 8
        out = "\n".join(rng.choices(self._lines, k=count)).encode()
        while len(out) < nbytes:
            out += b"\n" + "\n".join(rng.choices(self._lines, k=count)).encode()
        return out[:nbytes]


def _zipf_cumulative(n: int) -> list[float]:
    total = 0.0
    cum = []
    for rank in range(1, n + 1):
        total += 1.0 / rank
        cum.append(total)
    return cum


# --------------------------------------------------------------------------- writing


class TreeWriter:
    """Writes files under ``root`` and keeps per-category counts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stats: dict[str, CategoryStats] = {}

    def _account(self, category: str, nbytes: int) -> None:
        stats = self.stats.setdefault(category, CategoryStats())
        stats.files += 1
        stats.bytes += nbytes

    def path(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, category: str, rel: str, data: bytes) -> None:
        self.path(rel).write_bytes(data)
        self._account(category, len(data))

    def write_chunks(self, category: str, rel: str, chunks: Iterator[bytes]) -> None:
        nbytes = 0
        with self.path(rel).open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                nbytes += len(chunk)
        self._account(category, nbytes)

    def copy(self, category: str, src: Path, rel: str) -> None:
        dst = self.path(rel)
        shutil.copy2(src, dst)
        self._account(category, dst.stat().st_size)

    def category_bytes(self, category: str) -> int:
        return self.stats.get(category, CategoryStats()).bytes


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(f"{seed}:{name}")


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(low * (high / low) ** rng.random())


# --------------------------------------------------------------------------- categories


def find_source_candidates(roots: tuple[str, ...] = SOURCE_ROOTS) -> list[str]:
    """Regular text-like files under ``roots``, sorted (deterministic for a given machine)."""
    found: list[str] = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if os.path.splitext(name)[1] not in SOURCE_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and SOURCE_MIN_BYTES <= st.st_size <= SOURCE_MAX_BYTES:
                    found.append(path)
    return found


def select_sources(rng: random.Random, candidates: list[str], budget: int) -> list[str]:
    """A seeded random subset of ``candidates`` adding up to at most ``budget`` bytes."""
    order = list(candidates)
    rng.shuffle(order)
    chosen: list[str] = []
    total = 0
    for path in order:
        size = os.path.getsize(path)
        if total + size > budget:
            continue
        chosen.append(path)
        total += size
        if total >= budget * 0.995:
            break
    return sorted(chosen)


def gen_source(
    w: TreeWriter, text: TextSource, seed: int, budget: int, manifest: list[str] | None
) -> list[str]:
    rng = _rng(seed, "source")
    if manifest is None:
        manifest = select_sources(rng, find_source_candidates(), budget)
    copied: list[str] = []
    for src in manifest:
        if os.path.isfile(src) and w.category_bytes("source") < budget:
            w.copy("source", Path(src), "source" + src)
            copied.append(src)
    # Top up with synthetic source-like files if the machine had too few real ones.
    index = 0
    while w.category_bytes("source") < budget:
        size = min(_log_uniform(rng, 2 * KIB, 200 * KIB), budget - w.category_bytes("source"))
        ext = rng.choice((".py", ".c", ".h", ".md", ".json"))
        w.write(
            "source",
            f"source/synthetic/mod{index // 100:03d}/file{index:05d}{ext}",
            text.text(rng, size),
        )
        index += 1
    return copied


_SMALL_EXTS = (".txt", ".md", ".json", ".log", ".csv", ".eml", ".conf", ".html")
_BLOB_EXTS = (".dat", ".bin", ".png", ".ico")


def gen_small(w: TreeWriter, text: TextSource, seed: int, budget: int) -> None:
    rng = _rng(seed, "small")
    previous: list[bytes] = []
    index = 0
    while w.category_bytes("small") < budget:
        size = min(rng.randint(1 * KIB, 64 * KIB), max(1, budget - w.category_bytes("small")))
        kind = rng.random()
        if kind < 0.03 and previous:
            data, ext = rng.choice(previous), ".copy"
        elif kind < 0.18:
            data, ext = rng.randbytes(size), rng.choice(_BLOB_EXTS)
        else:
            data, ext = text.text(rng, size), rng.choice(_SMALL_EXTS)
        if len(previous) < 64:
            previous.append(data)
        w.write("small", f"small/d{index // 120:04d}/item{index:06d}{ext}", data)
        index += 1


_MEDIA = (
    (".jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    (".mp4", b"\x00\x00\x00\x18ftypmp42"),
    (".zip", b"PK\x03\x04"),
    (".png", b"\x89PNG\r\n\x1a\n"),
)


def gen_compressed(w: TreeWriter, text: TextSource, seed: int, budget: int) -> None:
    rng = _rng(seed, "compressed")
    index = 0
    while w.category_bytes("compressed") < budget:
        remaining = budget - w.category_bytes("compressed")
        size = min(_log_uniform(rng, 64 * KIB, 8 * MIB), remaining)
        if rng.random() < 0.5:
            raw = text.text(rng, size * 3)
            data = gzip.compress(raw, compresslevel=6, mtime=0)
            name = f"compressed/logs/archive-{index:04d}.log.gz"
        else:
            ext, magic = rng.choice(_MEDIA)
            data = magic + rng.randbytes(max(0, size - len(magic)))
            name = f"compressed/media/{index // 50:03d}/IMG_{index:05d}{ext}"
        w.write("compressed", name, data)
        index += 1


def gen_random(w: TreeWriter, seed: int, budget: int) -> None:
    rng = _rng(seed, "random")
    index = 0
    while w.category_bytes("random") < budget:
        size = min(_log_uniform(rng, 1 * MIB, 32 * MIB), budget - w.category_bytes("random"))
        w.write_chunks("random", f"random/blob-{index:04d}.bin", _random_chunks(rng, size))
        index += 1


def _random_chunks(rng: random.Random, size: int, chunk: int = 4 * MIB) -> Iterator[bytes]:
    done = 0
    while done < size:
        n = min(chunk, size - done)
        yield rng.randbytes(n)
        done += n


def _large_segments(rng: random.Random, text: TextSource, size: int) -> Iterator[bytes]:
    """Text 35 %, random 45 %, zeros 10 %, repeats of earlier segments 10 %."""
    recent: list[bytes] = []
    done = 0
    while done < size:
        n = min(rng.randint(256 * KIB, 4 * MIB), size - done)
        kind = rng.random()
        if kind < 0.35:
            seg = text.text(rng, n)
        elif kind < 0.80:
            seg = rng.randbytes(n)
        elif kind < 0.90:
            seg = bytes(n)
        else:
            seg = rng.choice(recent)[:n] if recent else bytes(n)
        if len(recent) < 16 and kind < 0.80:
            recent.append(seg)
        yield seg
        done += len(seg)


def gen_large(w: TreeWriter, text: TextSource, seed: int, budget: int) -> None:
    rng = _rng(seed, "large")
    w.write_chunks("large", "large/disk.img", _large_segments(rng, text, budget))


def gen_misc(w: TreeWriter, text: TextSource, seed: int) -> None:
    """Edge cases every backup tool must restore: empty files/dirs, symlinks, odd names."""
    rng = _rng(seed, "misc")
    for i in range(8):
        w.write("misc", f"misc/empty/empty-{i}.txt", b"")
    (w.root / "misc/empty-dir/nested").mkdir(parents=True, exist_ok=True)
    for name in ("résumé.txt", "日本語のメモ.md", "file with spaces.txt", "ünïcödé-ñame.json"):
        w.write("misc", f"misc/names/{name}", text.text(rng, rng.randint(100, 8000)))
    links = w.path("misc/links")
    links.mkdir(parents=True, exist_ok=True)
    (links / "to-names").symlink_to("../names")
    (links / "to-resume.txt").symlink_to("../names/résumé.txt")
    (links / "dangling").symlink_to("does-not-exist")


# --------------------------------------------------------------------------- dataset


def scan(root: Path) -> tuple[int, int]:
    """(number of regular files, total bytes) under ``root``."""
    files = total = 0
    for _, st in iter_files(root):
        files += 1
        total += st.st_size
    return files, total


def generate(root: Path, size: int, seed: int, manifest: list[str] | None) -> DatasetInfo:
    """Generate the data set into ``root`` (which must not exist)."""
    root.mkdir(parents=True)
    w = TreeWriter(root)
    text = TextSource(_rng(seed, "text"))
    budget = {name: int(size * share) for name, share in SHARES.items()}
    copied = gen_source(w, text, seed, budget["source"], manifest)
    gen_small(w, text, seed, budget["small"])
    gen_compressed(w, text, seed, budget["compressed"])
    gen_random(w, seed, budget["random"])
    gen_large(w, text, seed, budget["large"])
    gen_misc(w, text, seed)
    files, total = scan(root)
    return DatasetInfo(DATASET_VERSION, seed, size, files, total, w.stats, copied)


def ensure_dataset(
    root: Path, size: int, seed: int = DEFAULT_SEED, log: bool = True
) -> DatasetInfo:
    """Reuse the data set in ``root`` if it matches, otherwise (re)generate it."""
    meta_path = root.with_name(root.name + ".json")
    old: DatasetInfo | None = None
    if meta_path.exists():
        old = DatasetInfo.from_json(json.loads(meta_path.read_text()))
    same_params = old is not None and (old.version, old.seed, old.requested_bytes) == (
        DATASET_VERSION,
        seed,
        size,
    )
    if old is not None and same_params and root.is_dir() and scan(root) == (old.files, old.bytes):
        return old
    if log:
        print(f"generating data set ({size / GIB:.2f} GiB) in {root} ...", file=sys.stderr)
    manifest = old.source_manifest if old is not None and same_params else None
    tmp = root.with_name(root.name + ".partial")
    for path in (root, tmp):
        if path.exists():
            shutil.rmtree(path)
    info = generate(tmp, size, seed, manifest)
    tmp.rename(root)
    meta_path.write_text(json.dumps(info.to_json(), indent=1))
    return info


# --------------------------------------------------------------------------- the 1 % change


def _overwrite_regions(
    path: Path, rng: random.Random, regions: int, region_size: int = 64 * KIB
) -> int:
    """Overwrite ``regions`` evenly spaced, 4 KiB-aligned regions with random bytes."""
    size = path.stat().st_size
    region_size = min(region_size, max(1, size // (2 * regions)))
    written = 0
    with path.open("r+b") as f:
        for i in range(regions):
            offset = (int((i + 0.5) * size / regions) // (4 * KIB)) * 4 * KIB
            offset = min(offset, max(0, size - region_size))
            f.seek(offset)
            written += f.write(rng.randbytes(region_size))
    return written


def _files_under(root: Path, top: str) -> list[Path]:
    return [root / top / rel for rel, _ in iter_files(root / top)]


def apply_change(root: Path, seed: int = DEFAULT_SEED) -> ChangeSummary:
    """Modify ~1 % of the bytes of the data set in ``root`` in place, deterministically.

    Overwrites evenly spaced 64 KiB regions in the large file and in a few large random and
    compressed files, appends to or rewrites ~1 % of the small and source files, adds a few
    new files and deletes a few. Only the touched files get new mtimes (and ctimes).
    """
    rng = _rng(seed, "change")
    files = [root / rel for rel, _ in iter_files(root)]
    budget = sum(p.stat().st_size for p in files) // 100
    out = ChangeSummary()

    large = root / "large/disk.img"
    if large.exists():
        regions = max(16, int(0.4 * budget / (64 * KIB)))
        out.bytes_written += _overwrite_regions(large, rng, regions)
        out.files_modified += 1

    big = _files_under(root, "random") + _files_under(root, "compressed")
    big = [p for p in big if p.stat().st_size >= 2 * MIB]
    for path in rng.sample(big, min(len(big), max(1, round(0.25 * budget / MIB)))):
        out.bytes_written += _overwrite_regions(path, rng, 16)
        out.files_modified += 1

    text = TextSource(_rng(seed, "change-text"), vocabulary=2000, lines=3000)
    small = _files_under(root, "small") + _files_under(root, "source")
    for i, path in enumerate(rng.sample(small, min(len(small), max(10, len(small) // 100)))):
        if i % 2 == 0:
            with path.open("ab") as f:
                out.bytes_written += f.write(text.text(rng, rng.randint(1 * KIB, 8 * KIB)))
        else:
            size = path.stat().st_size
            out.bytes_written += path.write_bytes(text.text(rng, max(1, size)))
        out.files_modified += 1

    for i in range(max(5, len(small) // 1000)):
        new = root / f"small/new/added-{i:04d}.txt"
        new.parent.mkdir(parents=True, exist_ok=True)
        out.bytes_written += new.write_bytes(text.text(rng, rng.randint(1 * KIB, 64 * KIB)))
        out.files_added += 1
    for path in rng.sample(small, min(len(small), max(3, len(small) // 1000))):
        if path.exists():
            path.unlink()
            out.files_deleted += 1
    return out


def describe_dataset(info: DatasetInfo) -> list[str]:
    """The data set in a few lines: files and bytes, then per category."""
    lines = [
        f"data set: {info.files} files, {info.bytes / 1e6:.1f} MB ({info.bytes / GIB:.2f} GiB)"
    ]
    for name, c in info.categories.items():
        lines.append(f"  {name:<11} {c.files:>7} files {c.bytes / 1e6:10.1f} MB")
    return lines
