"""Data files wherever they are: local paths, or any fsspec URL (``s3://``, ``gs://``, ``http://``).

A :class:`Storage` reads, lists and writes; local paths go straight to the operating system,
URLs through fsspec (s3fs, gcsfs, ...), whose filesystems fsspec itself caches per process.
Every remote call has a timeout (connect and read) and is retried with exponential backoff
(``policy.retries`` times); past that it raises :class:`StorageError`, which the datasets count
as a broken file like an undecodable video. A missing object is retried too (a listing and a
read may disagree for a moment on eventually consistent stores); access denied is not.

Remote reads are byte ranges: :meth:`Storage.open_binary` gives a seekable file (a
:class:`RangeFile`) whose reads are ranged GETs of at most ``block_size`` bytes, the last two
kept (a read-ahead cache), so a decoder's seek stays a seek and a seek back into a range just
read costs nothing; a video reader prefetches the span of one clip's packets in one request.
:class:`IOStats` counts the requests and bytes of one :class:`Storage` (per process: each
DataLoader worker has its copy).

Endpoint, credentials and region come from the usual variables and files of each library
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws/credentials``, ...). Paths are shown
through :func:`redact`, which drops credentials written into a URL.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any, BinaryIO, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

log = logging.getLogger(__name__)

T = TypeVar("T")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_SECRET_PARTS = ("key", "secret", "token", "signature", "credential", "password")
DEFAULT_BLOCK_SIZE = 4 * 2**20
FIRST_BLOCK_SIZE = 64 * 2**10


def scheme(path: str | os.PathLike) -> str:
    """The URL scheme of ``path`` (``"s3"``, ``"gs"``, ...), ``""`` for a plain path."""
    m = _SCHEME.match(str(path))
    return m.group(1).lower() if m else ""


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL with a scheme other than ``file://``."""
    return scheme(path) not in ("", "file")


def local_path(path: str | os.PathLike) -> str:
    """A local path without its ``file://`` prefix."""
    path = str(path)
    return path[len("file://") :] if scheme(path) == "file" else path


def redact(text: str) -> str:
    """``text`` (a path or URL) with the userinfo and the key/secret/token query parts of a URL
    replaced by ``***``: safe to log."""
    if not is_remote(text):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = [
        (k, "***" if any(s in k.lower() for s in _SECRET_PARTS) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))


def has_credentials(url: str) -> bool:
    """True when a URL carries credentials itself (userinfo or a key/secret/token query part)."""
    return is_remote(url) and redact(url) != urlunsplit(urlsplit(url)._replace(fragment=""))


class StorageError(OSError):
    """A file that could not be read or written, after the retries; ``path`` is redacted."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = redact(str(path)), reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class IOStats:
    """Requests and bytes of one :class:`Storage` (remote calls only)."""

    requests: int = 0
    """remote calls made, retries included (ranged GETs, HEADs, listings, PUTs)"""
    bytes_read: int = 0
    """bytes received by ranged reads"""
    retries: int = 0
    """calls that failed and were tried again"""
    failures: int = 0
    """operations given up after the retries (raised as StorageError)"""

    def reset(self) -> None:
        self.requests = self.bytes_read = self.retries = self.failures = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class StoragePolicy:
    """Retries and timeouts of remote calls."""

    retries: int = 3
    """tries after the first one failed"""
    timeout_s: float = 30.0
    """connect and read timeout of one request"""
    backoff_s: float = 0.2
    """wait before the first retry; doubles with each further one"""
    max_backoff_s: float = 5.0
    """longest wait between two tries"""

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try ``attempt`` (0-based)."""
        return min(self.backoff_s * 2**attempt, self.max_backoff_s)


def filesystem_options(protocol: str, timeout_s: float) -> dict[str, Any]:
    """Options of the fsspec filesystem of ``protocol``: its own retries off (the
    :class:`Storage` retries every call the same way) and connect/read timeouts set."""
    if protocol in ("s3", "s3a"):
        return {
            "config_kwargs": {
                "connect_timeout": timeout_s,
                "read_timeout": timeout_s,
                "retries": {"total_max_attempts": 1},
            }
        }
    if protocol in ("gs", "gcs"):
        return {"timeout": timeout_s, "requests_timeout": timeout_s}
    if protocol in ("http", "https"):
        import aiohttp

        timeout = aiohttp.ClientTimeout(sock_connect=timeout_s, sock_read=timeout_s)
        return {"client_kwargs": {"timeout": timeout}}
    return {}


def _permanent(err: BaseException) -> bool:
    """Errors that retrying cannot fix: access denied, a folder where a file was expected,
    and programming errors."""
    return isinstance(
        err, (PermissionError, IsADirectoryError, NotADirectoryError, TypeError, ValueError)
    )


@dataclass
class Storage:
    """Reads, lists and writes local paths and fsspec URLs with one retry/timeout policy;
    ``stats`` counts the remote requests and bytes (picklable: DataLoader workers get copies)."""

    policy: StoragePolicy = field(default_factory=StoragePolicy)
    stats: IOStats = field(default_factory=IOStats)

    @classmethod
    def from_config(cls, cfg: Any) -> Storage:
        """A storage with the retries and timeout of a ``DataConfig`` (its own, zeroed stats)."""
        return cls(StoragePolicy(retries=cfg.storage_retries, timeout_s=cfg.storage_timeout_s))

    def filesystem(self, url: str) -> tuple[Any, str]:
        """``(fsspec filesystem, path inside it)`` of a URL; fsspec caches the filesystem."""
        import fsspec

        options = filesystem_options(scheme(url), self.policy.timeout_s)
        fs, path = fsspec.core.url_to_fs(url, **options)
        if scheme(url) in ("s3", "s3a"):
            fs.retries = 1  # s3fs's own retry loop: ours retries, with its backoff and counts
        return fs, path

    def call(self, url: str, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` (one remote request), tried ``1 + policy.retries`` times with backoff.
        Raises :class:`StorageError` naming ``what`` failed and why."""
        attempts = 1 + self.policy.retries
        for attempt in range(attempts):
            self.stats.requests += 1
            try:
                return fn()
            except Exception as err:  # noqa: BLE001 - every library raises its own types
                reason = _describe(err)
                if _permanent(err) or attempt == attempts - 1:
                    self.stats.failures += 1
                    tries = f" after {attempt + 1} tries" if attempt else ""
                    raise StorageError(url, f"{what} failed{tries}: {reason}") from None
                self.stats.retries += 1
                log.debug("%s of %s failed (%s); retrying", what, redact(url), reason)
                time.sleep(self.policy.delay(attempt))
        raise AssertionError("unreachable")

    # -- reading -------------------------------------------------------------------------------
    def size(self, path: str) -> int:
        """Size of a file in bytes."""
        if not is_remote(path):
            return os.path.getsize(local_path(path))
        fs, inner = self.filesystem(path)
        return int(self.call(path, "size", lambda: fs.size(inner)))

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """``length`` bytes from offset ``start`` (fewer at the end of the file): one ranged
        GET remotely, retried."""
        if length <= 0:
            return b""
        if not is_remote(path):
            with open(local_path(path), "rb") as f:
                f.seek(start)
                return f.read(length)
        fs, inner = self.filesystem(path)
        data = self.call(path, "read", lambda: fs.cat_file(inner, start=start, end=start + length))
        self.stats.bytes_read += len(data)
        return data

    def read_bytes(self, path: str) -> bytes:
        """A whole (small) file: list files, class indexes."""
        if not is_remote(path):
            with open(local_path(path), "rb") as f:
                return f.read()
        fs, inner = self.filesystem(path)
        data = self.call(path, "read", lambda: fs.cat_file(inner))
        self.stats.bytes_read += len(data)
        return data

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def open_binary(self, path: str, *, block_size: int | None = None) -> BinaryIO:
        """A seekable binary file. Remote: a :class:`RangeFile` reading ranges of at most
        ``block_size`` bytes (default 4 MiB), the last two cached. Opening an S3 object is one
        ranged GET of its first block (up to 64 KiB, kept), whose answer carries the object's
        size; other stores make one size request and read the first block when it is needed."""
        if not is_remote(path):
            return open(local_path(path), "rb")
        block_size = block_size or DEFAULT_BLOCK_SIZE
        head = b""
        if scheme(path) in ("s3", "s3a"):
            head, size = self._s3_head(path, min(block_size, FIRST_BLOCK_SIZE))
        else:
            size = self.size(path)
        return RangeFile(self, path, size, block_size, head=head)  # type: ignore[return-value]

    def _s3_head(self, path: str, length: int) -> tuple[bytes, int]:
        """``(first bytes, total size)`` of an S3 object in one ranged GET of ``length`` bytes,
        retried; an empty object (which has no byte 0 to ask for) is confirmed by a size
        request."""
        fs, inner = self.filesystem(path)
        answer = self.call(path, "read", lambda: _s3_first_block(fs, inner, length))
        if answer is None:
            return b"", self.size(path)
        self.stats.bytes_read += len(answer[0])
        return answer

    def exists(self, path: str) -> bool:
        if not is_remote(path):
            return os.path.exists(local_path(path))
        fs, inner = self.filesystem(path)
        return bool(self.call(path, "exists", lambda: fs.exists(inner)))

    def list_files(self, root: str) -> list[str]:
        """Every file under ``root`` (recursively), sorted, as paths of the same form as
        ``root`` (URLs for a URL)."""
        if not is_remote(root):
            base = local_path(root)
            return sorted(
                os.path.join(d, f) for d, _, files in os.walk(base, followlinks=True) for f in files
            )
        fs, inner = self.filesystem(root)
        found = self.call(root, "listing", lambda: fs.find(inner))
        prefix = root[: len(root) - len(inner.rstrip("/"))] if inner else root
        return sorted(prefix + p for p in found)

    # -- writing -------------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file atomically (a reader sees the old file or the new one)."""
        with self.open_atomic(path) as f:
            f.write(data)

    @contextlib.contextmanager
    def open_atomic(self, path: str) -> Iterator[IO[bytes]]:
        """A binary file to write ``path`` through: it appears (whole) when the block ends
        without an error. Local: a temporary file beside it, renamed; remote: a local temporary
        file uploaded with one request (an object appears whole or not at all)."""
        if not is_remote(path):
            target = local_path(path)
            folder = os.path.dirname(os.path.abspath(target))
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(target))
            try:
                with os.fdopen(fd, "wb") as f:
                    yield f
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return
        with tempfile.NamedTemporaryFile("w+b", suffix=".upload") as f:
            yield f
            f.flush()
            fs, inner = self.filesystem(path)
            self.call(path, "upload", lambda: fs.put_file(f.name, inner))


class RangeFile(io.RawIOBase):
    """A remote file as a seekable binary stream read in ranged reads of
    :meth:`Storage.read_range`, the last ``max_blocks`` ranges cached (seeking back into them,
    a decoder returning to a key frame, costs no request).

    A read outside the cache fetches the aligned block of ``min(block_size, 64 KiB)`` around
    it; a read that continues where the last fetch ended fetches twice as much as that one, up
    to ``block_size``: opening a file reads its header in one small request, reading a file
    through takes a few growing ones. :meth:`prefetch` fetches a known span (a clip's packets)
    in one request of at most ``block_size``."""

    def __init__(
        self,
        storage: Storage,
        path: str,
        size: int,
        block_size: int,
        max_blocks: int = 2,
        head: bytes = b"",
    ) -> None:
        """``head``: the file's first bytes when they were read at opening (kept as the
        first fetched block)."""
        super().__init__()
        self.storage, self.path, self.size, self.pos = storage, path, size, 0
        self.block_size, self.max_blocks = block_size, max_blocks
        self._first = min(block_size, FIRST_BLOCK_SIZE)
        self._ranges: OrderedDict[int, bytes] = OrderedDict()  # start -> bytes
        self._last = (-1, 0)  # (end, length) of the last fetch
        if head:
            self._keep(0, head[:size], self._first)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _cached(self, pos: int) -> tuple[int, bytes] | None:
        for start, data in self._ranges.items():
            if start <= pos < start + len(data):
                self._ranges.move_to_end(start)
                return start, data
        return None

    def _fetch(self, start: int, length: int) -> tuple[int, bytes]:
        data = self.storage.read_range(self.path, start, min(length, self.size - start))
        return self._keep(start, data, length)

    def _keep(self, start: int, data: bytes, length: int) -> tuple[int, bytes]:
        """Cache ``data`` (bytes from ``start``, fetched asking for ``length``)."""
        self._ranges[start] = data
        self._ranges.move_to_end(start)
        while len(self._ranges) > self.max_blocks:
            self._ranges.popitem(last=False)
        self._last = (start + len(data), length)
        return start, data

    def _range_at(self, pos: int) -> tuple[int, bytes]:
        hit = self._cached(pos)
        if hit is not None:
            return hit
        end, length = self._last
        if pos == end:  # reading on: fetch more each time
            return self._fetch(pos, min(max(2 * length, self._first), self.block_size))
        return self._fetch(pos - pos % self._first, self._first)

    def prefetch(self, start: int, end: int) -> None:
        """Fetch bytes ``[start, end)`` (at most ``block_size`` of them) in one request; a
        part already cached at ``start`` is not fetched again."""
        start, end = max(0, start), min(end, self.size)
        hit = self._cached(start)
        while hit is not None and start < end:
            start = hit[0] + len(hit[1])
            hit = self._cached(start)
        if start < end:
            fetched, data = self._fetch(start, min(end - start, self.block_size))
            self._last = (fetched + len(data), self._first // 2)  # reading on: small blocks

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self.pos < self.size:
            start, data = self._range_at(self.pos)
            offset = self.pos - start
            chunk = data[offset : offset + len(view) - done]
            if not chunk:
                break
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self.pos += len(chunk)
        return done


def _s3_first_block(fs: Any, inner: str, length: int) -> tuple[bytes, int] | None:
    """``(bytes 0 to length - 1, object size)`` of an S3 object through s3fs in one
    ``get_object`` with a ``Range`` (the size is in its ``Content-Range``: ``bytes 0-N/SIZE``);
    None when the range is unsatisfiable (416: the object is empty)."""
    from fsspec.asyn import sync
    from s3fs.core import version_id_kw

    bucket, key, version = fs.split_path(inner)

    async def get() -> tuple[bytes, str | None]:
        kw = version_id_kw(version)
        resp = await fs._call_s3(
            "get_object", Bucket=bucket, Key=key, Range=f"bytes=0-{length - 1}", **kw
        )
        try:
            return await resp["Body"].read(), resp.get("ContentRange")
        finally:
            resp["Body"].close()

    try:
        data, content_range = sync(fs.loop, get)
    except OSError as err:
        if _s3_code(err.__cause__) in ("InvalidRange", "416"):
            return None
        raise
    if not content_range:  # the whole object (a store that ignores ranges)
        return data, len(data)
    return data, int(content_range.rsplit("/", 1)[1])


def _s3_code(err: BaseException | None) -> str | None:
    """The error code of a botocore ``ClientError`` (None for anything else)."""
    response = getattr(err, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def _describe(err: BaseException) -> str:
    """One line naming an error (credentials in URLs redacted)."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, FileNotFoundError):
        text = "not found"
    elif isinstance(err, PermissionError):
        text = f"access denied ({text})"
    elif isinstance(err, TimeoutError) or "timeout" in type(err).__name__.lower():
        text = f"timed out ({type(err).__name__})"
    return " ".join(redact(w) for w in text.split())[:300]


def open_binary(path: str, *, block_size: int | None = None) -> BinaryIO:
    """:meth:`Storage.open_binary` with the default policy (its stats are not kept)."""
    return Storage().open_binary(path, block_size=block_size)


def read_range(path: str, start: int, length: int) -> bytes:
    """:meth:`Storage.read_range` with the default policy."""
    return Storage().read_range(path, start, length)


def list_files(root: str) -> list[str]:
    """:meth:`Storage.list_files` with the default policy."""
    return Storage().list_files(root)


def exists(path: str) -> bool:
    """:meth:`Storage.exists` with the default policy."""
    return Storage().exists(path)


def write_bytes(path: str, data: bytes) -> None:
    """:meth:`Storage.write_bytes` with the default policy."""
    Storage().write_bytes(path, data)
