"""Videos, list files and class folders in object storage, against moto's real S3 API server on
localhost: the same batches as from disk, broken and missing objects counted, a failing or slow
endpoint retried and then counted (never a hang), credentials never written anywhere."""

from __future__ import annotations

import http.client
import http.server
import json
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from maskagain.config import ConfigError
from maskagain.data import BadFileTracker, DataConfig, MaskCollator, build_dataset
from maskagain.data.storage import (
    IOStats,
    Storage,
    StorageError,
    StoragePolicy,
    has_credentials,
    redact,
)
from maskagain.data.synthetic import write_video


def frames_for(i: int, n: int = 12, size: int = 32) -> np.ndarray:
    """(n, size, size, 3) uint8, textured and moving, different per video."""
    rng = np.random.default_rng(i)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 2 * t, axis=1) for t in range(n)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory, s3_server) -> tuple[Path, str]:
    """``root/{train,val}/<class>/v<j>.mp4`` (H.264) and ``root/train.txt``, on disk and in a
    bucket; returns (local root, s3 root)."""
    root = tmp_path_factory.mktemp("videos")
    lines, k = [], 0
    for split, per_class in (("train", 4), ("val", 1)):
        for cls in ("jump", "run"):
            (root / split / cls).mkdir(parents=True)
            for j in range(per_class):
                write_video(root / split / cls / f"v{j}.mp4", frames_for(k))
                lines.append(f"{split}/{cls}/v{j}.mp4 {int(cls == 'run')}\n")
                k += 1
    (root / "train.txt").write_text("".join(lines))
    url = s3_server.upload(root, s3_server.bucket("videos"), "k400")
    return root, url


def cfg(**kw) -> DataConfig:
    base = dict(input_size=32, short_side=32, num_frames=4, sampling_rate=2, num_workers=0)
    c = DataConfig(**{**base, **kw})
    c.validate()
    return c


def batches(c: DataConfig, workers: int = 0, n: int = 2) -> list[dict]:
    """The first ``n`` batches of a shuffled, seeded loader (augmentation seeded alike)."""
    ds = build_dataset(c, "train", "pretrain")
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    loader = DataLoader(
        ds,
        batch_size=3,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        num_workers=workers,
        collate_fn=MaskCollator("tube", 0.5, (2, 4, 4), seed=0),
    )
    return [b for _, b in zip(range(n), loader)]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert torch.equal(x["video"], y["video"]) and torch.equal(x["mask"], y["mask"])
        assert torch.equal(x["label"], y["label"]) and x["skipped"] == y["skipped"] == []


def test_list_file_run_from_s3_gives_the_batches_of_disk(videos):
    root, url = videos
    local = cfg(root=str(root), train_list=str(root / "train.txt"), num_sample=2)
    remote = cfg(root=url, train_list=f"{url}/train.txt", num_sample=2)
    assert remote.root == url  # URLs are kept as they are
    assert_same(batches(local, workers=1), batches(remote, workers=1))


def test_folder_run_from_s3_gives_the_batches_of_disk_and_lists_once(videos, tmp_path, s3_server):
    root, url = videos
    cache = tmp_path / "listing.json"
    local = cfg(kind="folder", root=str(root))
    remote = cfg(kind="folder", root=url, listing_cache=str(cache))
    assert_same(batches(local), batches(remote))
    listing = json.loads(cache.read_text())["roots"][url]
    assert "train/jump/v0.mp4" in listing and "train.txt" in listing
    # a second build reads the cached listing: a file added to the bucket is not seen
    s3_server.put(url.split("/")[2], "k400/train/jump/zz.mp4", b"")
    again = build_dataset(remote, "train", "pretrain")
    assert [r.path for r in again.records] == [
        r.path for r in build_dataset(remote, "train", "pretrain").records
    ]
    assert not any(r.path.endswith("zz.mp4") for r in again.records)
    s3_server.client().delete_object(Bucket=url.split("/")[2], Key="k400/train/jump/zz.mp4")


def test_broken_and_missing_objects_are_counted(videos, s3_server):
    import s3fs

    root, url = videos
    bucket = url.split("/")[2]
    s3_server.put(bucket, "k400/broken.mp4", b"not a video" * 100)
    s3_server.put(bucket, "k400/empty.mp4", b"")
    lines = "train/jump/v0.mp4 0\nbroken.mp4 0\nmissing.mp4 1\nempty.mp4 1\n"
    s3_server.put(bucket, "k400/bad.txt", lines.encode())
    s3fs.S3FileSystem.clear_instance_cache()  # forget listings made before these objects existed
    c = cfg(root=url, train_list=f"{url}/bad.txt", storage_retries=1)
    ds = build_dataset(c, "train", "eval")
    tracker = BadFileTracker(max_fraction=1.0)
    for i in range(len(ds)):
        item = ds[i]
        tracker.update({"label": [item["label"]], "skipped": item["skipped"]})
        assert item["index"] == 0  # every bad one is replaced by the good video
    reasons = {Path(p).name: r for p, r in tracker.first}
    assert set(reasons) == {"broken.mp4", "missing.mp4", "empty.mp4"}
    assert "not found" in reasons["missing.mp4"] and "after 2 tries" in reasons["missing.mp4"]
    assert "empty" in reasons["empty.mp4"] and "cannot open" in reasons["broken.mp4"]
    assert tracker.summary()["unique_bad_files"] == 3


class FaultyProxy:
    """An HTTP proxy in front of the S3 server that answers requests for paths containing
    ``target`` with 503 (``mode="503"``) or only after ``delay`` seconds (``mode="slow"``), the
    first ``times`` times; everything else is forwarded."""

    def __init__(self, upstream: str, target: str, mode: str, times: int, delay: float = 0):
        self.upstream = upstream.split("://", 1)[1]
        self.target, self.mode, self.times, self.delay = target, mode, times, delay
        self.hits = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                if proxy.target in self.path and proxy.hits < proxy.times:
                    proxy.hits += 1
                    if proxy.mode == "503":
                        body = b"<Error><Code>SlowDown</Code></Error>"
                        self.send_response(503)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        if self.command != "HEAD":
                            self.wfile.write(body)
                        return
                    time.sleep(proxy.delay)
                self._forward()

            def _forward(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=10)
                conn.request(self.command, self.path, body, dict(self.headers))
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.send_header("Content-Length", reply.getheader("Content-Length", "0"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def through_proxy(s3_server, monkeypatch):
    """Points S3 clients made from now on at a :class:`FaultyProxy` (configured by the test)."""
    import s3fs

    proxies = []

    def make(target: str, mode: str, times: int, delay: float = 0) -> FaultyProxy:
        proxy = FaultyProxy(s3_server.endpoint_url, target, mode, times, delay)
        proxies.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        s3fs.S3FileSystem.clear_instance_cache()  # a new client reads the endpoint
        return proxy

    yield make
    s3fs.S3FileSystem.clear_instance_cache()
    for p in proxies:
        p.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("mode", "times", "counted"),
    [("503", 2, False), ("503", 100, True), ("slow", 100, True)],
    ids=["503-twice-then-ok", "503-always", "slower-than-the-timeout"],
)
def test_failing_endpoint_is_retried_then_counted(videos, through_proxy, mode, times, counted):
    root, url = videos
    proxy = through_proxy("train/run/v1.mp4", mode, times, delay=3.0)
    c = cfg(root=url, train_list=f"{url}/train.txt", storage_retries=2, storage_timeout_s=0.5)
    ds = build_dataset(c, "train", "eval")
    bad = next(i for i, r in enumerate(ds.records) if r.path.endswith("train/run/v1.mp4"))
    start = time.monotonic()
    item = ds[bad]
    elapsed = time.monotonic() - start
    if counted:
        assert [Path(p).name for p, _ in item["skipped"]] == ["v1.mp4"]
        reason = item["skipped"][0][1]
        assert "after 3 tries" in reason, reason
        assert (
            ("timed out" in reason)
            if mode == "slow"
            else ("SlowDown" in reason)  # the 503's error code, from the opening GET's body
        )
        assert proxy.hits == 3 and ds.storage.stats.failures == 1
        # 3 tries, each bounded by the timeout (botocore may re-read once), and backoff 0.2 + 0.4
        assert elapsed < 3 * 2 * 0.5 + 0.6 + 5, elapsed
    else:
        assert item["skipped"] == [] and item["index"] == bad
        assert ds.storage.stats.retries == 2 and ds.storage.stats.failures == 0


@pytest.mark.slow
def test_credentials_never_reach_logs_configs_or_summaries(videos, tmp_path, monkeypatch, capsys):
    import s3fs

    from maskagain.cli.main import main
    from maskagain.models.loading import save_encoder
    from maskagain.models.registry import create_model

    key, secret = "AKIDLEAKCHECK1234", "SeCrEtLeAkChEcK/5678+abcd"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    s3fs.S3FileSystem.clear_instance_cache()
    root, url = videos
    teacher = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
    teacher_path = str(save_encoder(teacher, tmp_path / "teacher.safetensors"))

    def distill(run: Path, data_root: str) -> list[float]:
        args = ["distill", "--config", "configs/tiny/distill.yaml", "--out", str(run)]
        args += [f"teacher.source={teacher_path}", "data.kind=folder", f"data.root={data_root}"]
        args += ["data.sampling_rate=2", "engine.stop_after_steps=3"]
        assert main(args) == 0
        return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]

    remote = distill(tmp_path / "remote", url)
    assert remote == distill(tmp_path / "local", str(root)) and len(remote) == 3
    assert (tmp_path / "remote" / "listing.json").is_file()  # listed once, into the run
    out = capsys.readouterr()
    written = [
        p.read_text(errors="replace")
        for p in (tmp_path / "remote").rglob("*")
        if p.is_file() and p.suffix in (".json", ".jsonl", ".yaml", ".log", ".txt")
    ]
    for text in [out.out, out.err, *written]:
        assert key not in text and secret not in text
    s3fs.S3FileSystem.clear_instance_cache()


def test_urls_with_credentials_are_refused_and_redacted():
    url = "s3://AKID:SECRET@bucket/k400?X-Amz-Signature=abc&X-Amz-Credential=AKID&part=1"
    assert has_credentials(url) and not has_credentials("s3://bucket/k400")
    shown = redact(url)
    assert "AKID" not in shown and "SECRET" not in shown and "abc" not in shown
    assert shown.startswith("s3://***@bucket/k400?") and "part=1" in shown
    with pytest.raises(ConfigError, match="data.root' holds credentials"):
        cfg(kind="folder", root=url)


def test_storage_reads_ranges_and_counts_them(videos):
    root, url = videos
    storage = Storage(StoragePolicy(retries=0))
    path = "train/jump/v0.mp4"
    data = (root / path).read_bytes()
    with storage.open_binary(f"{url}/{path}", block_size=256) as f:
        f.seek(100)
        assert f.read(10) == data[100:110]
        f.seek(120)  # inside the read-ahead block: no request
        assert f.read(10) == data[120:130]
        f.seek(300)  # the next block, then back into the first: both cached
        assert f.read(10) == data[300:310]
        f.seek(10)
        assert f.read(5) == data[10:15]
        f.seek(-5, 2)
        assert f.read() == data[-5:]
    # the first block at opening (its answer gives the size), then one ranged read per
    # further aligned block touched
    last = len(data) // 256 * 256
    assert storage.stats == IOStats(requests=3, bytes_read=256 + len(data) - last + 256)


def test_small_empty_and_missing_objects_open_as_before(videos, s3_server):
    """An object shorter than the first block comes whole in the opening request; an empty
    one (no byte 0 to ask for) takes a size request more; a missing one fails."""
    bucket = videos[1].split("/")[2]
    small = s3_server.put(bucket, "sizes/small.bin", bytes(range(200)))
    empty = s3_server.put(bucket, "sizes/empty.bin", b"")
    storage = Storage(StoragePolicy(retries=0))
    with storage.open_binary(small) as f:
        assert f.seek(0, 2) == 200
        f.seek(50)
        assert f.read() == bytes(range(50, 200))
    assert storage.stats == IOStats(requests=1, bytes_read=200)
    storage.stats.reset()
    with storage.open_binary(empty) as f:
        assert f.seek(0, 2) == 0 and f.read() == b""
    assert storage.stats == IOStats(requests=2, bytes_read=0)
    with pytest.raises(StorageError, match="read failed: not found"):
        storage.open_binary(f"s3://{bucket}/sizes/missing.bin")
