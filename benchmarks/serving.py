"""App benchmarks: the served app (``python -m mmapp app``, its own process) driven by ``gradio_client``
and by plain HTTP (``POST /v1/caption``, multipart, one keep-alive ``httpx.Client`` per client).

* latency: a caption request through each client against the direct call (``Captioner.caption`` on the
  same checkpoint and image, in this process);
* concurrency: requests/s with 16 clients at once (the app batches concurrent requests) against one;
* memory: the app process's resident set (current and peak) after that load, both models loaded.

The app serves the default checkpoints (``checkpoints/`` or ``$MMAPP_CHECKPOINTS``) when both exist;
otherwise stand-ins of the same architecture and sizes (``configs/shapes_*.yaml``, random weights) are
built in a temporary folder, and the figures say so.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Figure, Sizes, against, median, process_memory_mb

GROUP = "app"
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_or_stand_in(folder: Path) -> tuple[Path, Path, str]:
    """(captioner, vqa, "shipped" or "stand-in") checkpoints for the app."""
    from mmapp.inference import default_checkpoint

    cap, vqa = default_checkpoint("captioner"), default_checkpoint("vqa")
    if cap.is_file() and vqa.is_file():
        return cap, vqa, "shipped"
    return (*stand_in_checkpoints(folder), "stand-in")


def stand_in_checkpoints(folder: Path) -> tuple[Path, Path]:
    """Random-weight checkpoints with the default models' architecture: EfficientNet-Lite0 (packaged
    weights, 14x14 joined grid at 224) and the decoder / VQA sizes of ``configs/shapes_*.yaml``."""
    import dataclasses

    import yaml

    from mmapp.app.examples import QUESTIONS
    from tests.support.tiny import WORDS
    from mmapp.checkpoint import save_model
    from mmapp.config import CaptionDecoderConfig, EncoderConfig, VQAConfig
    from mmapp.models.caption_decoder import build_caption_decoder
    from mmapp.models.encoder import build_encoder
    from mmapp.models.vqa import VQANet
    from mmapp.vocab import AnswerVocab, Vocab

    def section(name: str, key: str) -> dict:
        return (yaml.safe_load((REPO / "configs" / name).read_text()) or {}).get(key, {})

    def known(cls, values: dict) -> dict:  # the config's own fields (not vocab/encoder sizes, set below)
        names = {f.name for f in dataclasses.fields(cls)} - {"vocab_size", "num_answers", "encoder_dim"}
        return {k: v for k, v in values.items() if k in names}

    encoder = build_encoder(EncoderConfig())
    vocab = Vocab.build([" ".join(WORDS), *QUESTIONS])
    answers = AnswerVocab(tuple(WORDS[:100]) + tuple(str(i) for i in range(max(0, 100 - len(WORDS)))))
    decoder_cfg = CaptionDecoderConfig(**known(CaptionDecoderConfig, section("shapes_caption.yaml", "decoder")),
                                       vocab_size=len(vocab), encoder_dim=encoder.out_dim)
    vqa_cfg = VQAConfig(**known(VQAConfig, section("shapes_vqa.yaml", "vqa")), vocab_size=len(vocab),
                        num_answers=len(answers), encoder_dim=encoder.out_dim)
    folder.mkdir(parents=True, exist_ok=True)
    training = {"dataset": "random weights (benchmark stand-in)"}
    cap = save_model(folder / "captioner.safetensors", "captioner", build_caption_decoder(decoder_cfg).eval(),
                     encoder, vocab, training=training)
    vqa = save_model(folder / "vqa.safetensors", "vqa", VQANet(vqa_cfg).eval(), encoder, vocab, answers,
                     training={**training, "max_question_len": 30})
    return cap, vqa


class AppProcess:
    """``python -m mmapp app`` on a free port, stopped on exit."""

    def __init__(self, captioner: Path, vqa: Path, timeout_s: float = 180.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        import torch

        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO),
               "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the benchmark's thread count
        self.started = time.perf_counter()  # the command's start, for the cold-start figure
        self.proc = subprocess.Popen([sys.executable, "-m", "mmapp", "app", "--captioner", str(captioner),
                                      "--vqa", str(vqa), "--port", str(self.port), "--device", "cpu"],
                                     cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.timeout_s = timeout_s

    def __enter__(self) -> "AppProcess":
        import urllib.request

        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the app did not answer at {self.url} within {self.timeout_s:.0f} s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


IMPORTS = ("import torch, gradio\nfrom mmapp.vocab import tokenize\ntokenize('a')\n"
           "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])")


def import_floor_mib() -> float:
    """RSS of a process that only imports what the app needs (torch, gradio, nltk for the tokenizer; not
    timm, which the default encoder does without): the part of the app's memory no model or request adds."""
    out = subprocess.run([sys.executable, "-c", IMPORTS], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO)})
    return int(out.stdout.split()[-1]) / 1024


def _client(url: str, ssl_verify: bool = True):
    """A ``gradio_client.Client``. Its default, ``ssl_verify=True``, has httpx build a TLS context (loading
    the CA bundle) for every request, even to a plain ``http://`` URL, where there is nothing to verify;
    ``ssl_verify=False`` skips that and nothing else."""
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=ssl_verify)


def run(sizes: Sizes, folder: Path) -> list[Figure]:
    from gradio_client import handle_file

    from benchmarks.encoding import photos
    from mmapp.inference import Captioner

    cap_path, vqa_path, kind = default_or_stand_in(folder / "checkpoints")
    image = folder / "request.jpg"
    photos(1)[0].save(image, quality=90)
    note = f"{kind} checkpoints"

    captioner = Captioner.from_checkpoint(cap_path, device="cpu")
    captioner.caption(str(image), beam_size=3)
    direct = []
    for _ in range(sizes.app_requests * 2):
        start = time.perf_counter()
        captioner.caption(str(image), beam_size=3)
        direct.append(time.perf_counter() - start)
    del captioner

    measured = {}
    with AppProcess(cap_path, vqa_path) as app:
        with _http_client() as first:  # cold start: the command to its first answered request
            _http_request(app.url, image)(first)
        cold_start_s = time.perf_counter() - app.started
        def gradio_request(c) -> None:
            c.predict(handle_file(str(image)), 3, api_name="/caption")

        for verify, how in ((True, "gradio_client defaults"), (False, "gradio_client, ssl_verify=False")):
            measured[how] = _measure(gradio_request, lambda: _client(app.url, verify), sizes, app.proc.pid)
        measured["HTTP POST /v1/caption, httpx, multipart"] = _measure(_http_request(app.url, image),
                                                                       _http_client, sizes, app.proc.pid)
        rss, peak = process_memory_mb(app.proc.pid)

    floor = import_floor_mib()
    direct_ms = median(direct) * 1e3
    figures = [Figure(GROUP, "caption, direct call (Captioner.caption)", direct_ms, "ms", False, note=note,
                      samples=direct)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for how, m in measured.items():
        times, concurrent_rate = m.times, m.concurrent_rate
        served_ms, one_client_rate = median(times) * 1e3, 1.0 / median(times)
        overhead = served_ms - direct_ms
        figures += [
            Figure(GROUP, f"caption through {how}, 1 client", served_ms, "ms", False, note=note, samples=times),
            Figure(GROUP, f"client overhead over the direct call ({how})", overhead, "ms", False, "target +30 ms",
                   against(max(overhead, 1e-3), 30.0, False), 1.0, "served minus direct"),
            Figure(GROUP, f"{sizes.app_clients} concurrent clients ({how})", concurrent_rate, "requests/s",
                   True, "1 client (same run)", against(concurrent_rate, one_client_rate, True), 3.0,
                   f"1 client: {one_client_rate:.1f} requests/s; {note}"),
        ]
        if m.one_client_cpu and m.concurrent_cpu:
            # the clients cannot go faster than the cores spend on their requests: what N clients can
            # reach against one, with every core busy, at the CPU a request took under that load
            under_load = sum(m.concurrent_cpu)
            figures.append(Figure(
                GROUP, f"most {sizes.app_clients} clients can reach on {cores} cores ({how})",
                cores * served_ms / under_load, "x 1 client", True,
                note=f"information: {cores} cores x 1 client's {served_ms:.1f} ms / the CPU a request took under "
                     f"load, {under_load:.1f} ms (app {m.concurrent_cpu[0]:.1f} + clients {m.concurrent_cpu[1]:.1f}); "
                     f"1 client's request took app {m.one_client_cpu[0]:.1f} + client {m.one_client_cpu[1]:.1f} ms"))
    return figures + [
        Figure(GROUP, "cold start: `mmapp app` to its first answered POST /v1/caption", cold_start_s, "s", False,
               "target 10 s", against(cold_start_s, 10.0, False), 1.0, note),
        Figure(GROUP, "app process memory, both models loaded, after the load", peak, "MiB peak RSS", False,
               "target 1024 MiB", against(peak, 1024.0, False), 1.0, f"current RSS {rss:.0f} MiB; {note}"),
        Figure(GROUP, "a process that only imports torch, gradio, nltk", floor, "MiB RSS", False,
               note="information: the floor under the app's memory"),
    ]


def _measure(request, make_client, sizes: Sizes, pid: int) -> "Measured":
    """One client's latencies, then ``sizes.app_clients`` clients at once, with the CPU each took."""
    client = make_client()
    for _ in range(2):
        request(client)
    times = []
    cpu = _CPUClock(pid)
    for _ in range(sizes.app_requests * 2):
        start = time.perf_counter()
        request(client)
        times.append(time.perf_counter() - start)
    one_cpu = cpu.per_request(len(times))
    rate, many_cpu = _concurrent_rate(request, [make_client() for _ in range(sizes.app_clients)], sizes.app_requests,
                                      pid)
    return Measured(times, rate, one_cpu, many_cpu)


@dataclass
class Measured:
    """One client's latencies (s), the requests/s of many at once, and the CPU a request took in each
    (ms: the app's process, then this one's, the clients'), or None where ``/proc`` cannot tell."""

    times: list[float]
    concurrent_rate: float
    one_client_cpu: tuple[float, float] | None
    concurrent_cpu: tuple[float, float] | None


class _CPUClock:
    """CPU time used since it was made, by the app's process (Linux ``/proc``) and by this one."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = self._now()

    def _now(self) -> tuple[float, float] | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        mine = os.times()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), mine.user + mine.system

    def per_request(self, requests: int) -> tuple[float, float] | None:
        now = self._now()
        if now is None or self.start is None:
            return None
        return tuple((b - a) * 1e3 / requests for a, b in zip(self.start, now))


def _http_client():
    """A keep-alive ``httpx.Client``, as a program calling the HTTP API would hold one."""
    import httpx

    return httpx.Client(timeout=120)


def _http_request(url: str, image: Path):
    data = image.read_bytes()

    def request(client) -> None:
        reply = client.post(url + "v1/caption", files={"image": (image.name, data, "image/jpeg")},
                            data={"beam_size": "3"})
        reply.raise_for_status()

    return request


def _concurrent_rate(request, clients: list, requests_each: int, pid: int) -> tuple[float, tuple[float, float] | None]:
    """(requests per second, CPU per request as ``_CPUClock.per_request``) of ``clients`` each sending
    ``requests_each`` requests at once, from threads, to the app with process id ``pid``."""
    for c in clients:  # warm every connection once
        request(c)
    cpu = _CPUClock(pid)  # from here: the warm-up requests ran one at a time
    gate = threading.Barrier(len(clients) + 1)
    errors: list[BaseException] = []

    def worker(c) -> None:
        gate.wait()
        try:
            for _ in range(requests_each):
                request(c)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    gate.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} concurrent requests failed: {errors[0]!r}")
    return len(clients) * requests_each / elapsed, cpu.per_request(len(clients) * requests_each)
