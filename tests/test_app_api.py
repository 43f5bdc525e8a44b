"""The served app, driven through ``gradio_client``: the /caption and /answer endpoints, a clear error
for every kind of bad input (and the app keeps serving), and 32 concurrent requests batched together."""

from __future__ import annotations

import socket
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmapp.app.service import AppService
from tests.support.tiny import make_tiny_checkpoints, write_scene
from mmapp.inference import Captioner, VQAModel

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from mmapp.app.ui import build_service_demo, launch_demo

    folder = tmp_path_factory.mktemp("app")
    cap_path, vqa_path = make_tiny_checkpoints(folder, captioner_ood_threshold=-1.0)
    captioner = Captioner.from_checkpoint(cap_path, "cpu")
    vqa = VQAModel.from_checkpoint(vqa_path, "cpu", encoder=captioner.encoder)
    service = AppService(captioner, vqa, max_batch_size=16, checkpoints={"captioner": cap_path, "vqa": vqa_path})
    demo = build_service_demo(service)
    _, url, _ = launch_demo(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    yield {"client": client, "url": url, "service": service, "demo": demo,
           "scene": write_scene(folder / "scene.png"), "folder": folder, "grid": captioner.grid}
    demo.close()
    service.close()


def caption(server, path, beam=3):
    return server["client"].predict(handle_file(str(path)), beam, api_name="/caption")


def answer(server, path, question):
    return server["client"].predict(handle_file(str(path)), question, api_name="/answer")


def test_caption_endpoint(server):
    data = caption(server, server["scene"], 2)
    assert isinstance(data["caption"], str) and data["caption"] == " ".join(data["tokens"])
    assert isinstance(data["score"], float) and data["score"] <= 0 and data["beam_size"] == 2
    attention = np.asarray(data["attention"])
    assert attention.shape == (len(data["tokens"]), *server["grid"])  # one (H, W) map per token
    assert np.allclose(attention.reshape(len(data["tokens"]), -1).sum(-1), 1, atol=1e-3)
    assert data["image_size"] == [224, 224] and data["grid"] == list(server["grid"])
    assert data["out_of_domain"]["flagged"] is True  # the tiny captioner's threshold is -1


def test_answer_endpoint(server):
    data = answer(server, server["scene"], "what color is the circle?")
    assert data["question"] == "what color is the circle?"
    probs = [a["probability"] for a in data["answers"]]
    assert len(data["answers"]) == 5 and all(isinstance(a["answer"], str) for a in data["answers"])
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert np.asarray(data["attention"]).shape == tuple(server["grid"])
    assert data["out_of_domain"] is None and data["warnings"] == []  # the VQA checkpoint has no OOD stats


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BAD_IMAGES = {
    "notes.txt": (lambda p: p.write_text("hello, not an image"), "notes.txt is not an image file PIL can read"),
    "empty.png": (lambda p: p.write_bytes(b""), "empty.png is not an image file PIL can read"),
    "truncated.png": (lambda p: p.write_bytes(p.with_name("scene.png").read_bytes()[:400]),
                      "truncated.png is corrupt or truncated"),
    "tiny.png": (lambda p: Image.new("RGB", (1, 1)).save(p), "tiny.png is 1x1 pixels: too small"),
    "huge.png": (lambda p: Image.new("1", (9000, 5000)).save(p), "more than the 40 megapixel limit"),
    "bomb.png": (lambda p: p.write_bytes(_png_header_only(100_000, 100_000)), "too large to decode safely"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_get_a_clear_error_and_the_app_keeps_serving(server, name):
    make, message = BAD_IMAGES[name]
    path = server["folder"] / name
    make(path)
    for call in (lambda: caption(server, path), lambda: answer(server, path, "what color is the circle?")):
        with pytest.raises(AppError) as info:
            call()
        assert message in str(info.value) and "Traceback" not in str(info.value)
        assert str(server["folder"]) not in str(info.value)  # the server's temp path is not shown
    assert caption(server, server["scene"], 1)["tokens"]  # still serving


BAD_QUESTIONS = [("", "the question is empty"), ("   ", "the question is empty"),
                 ("why " * 2500, "10,000 characters long; the limit is 500"),
                 ("🙂🙂🙂", "none of the question's words are known"),
                 ("这是什么颜色？", "none of the question's words are known"),
                 ("?!?", "the question has no words")]


@pytest.mark.parametrize("question, message", BAD_QUESTIONS)
def test_bad_questions_get_a_clear_error(server, question, message):
    with pytest.raises(AppError, match=message):
        answer(server, server["scene"], question)
    assert len(answer(server, server["scene"], "is there a red square?")["answers"]) == 5


@pytest.mark.parametrize("beam", [0, 11, 2.5])
def test_bad_beam_sizes_get_a_clear_error(server, beam):
    with pytest.raises(AppError, match="beam size must be a whole number from 1 to 10"):
        caption(server, server["scene"], beam)


def test_odd_but_valid_images_work(server):
    folder = server["folder"]
    rgb = np.asarray(Image.open(server["scene"]).convert("RGB"))
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(folder / "deep16.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    for name in ("gray.png", "rgba.png", "deep16.png", "cmyk.jpg", "anim.gif"):
        data = caption(server, folder / name)
        assert data["image_size"] == [224, 224], name
    assert caption(server, folder / "anim.gif")["warnings"] == ["anim.gif is animated: only its first frame is used"]
    data = answer(server, folder / "rgba.png", "what color is the ✨ circle?")
    assert data["warnings"] == ["words the model does not know were ignored: '✨'"] and len(data["answers"]) == 5


def test_a_client_cannot_make_the_app_read_other_server_files(server):
    import httpx

    secret = server["folder"] / "private.png"
    write_scene(secret)
    base = server["url"].rstrip("/")
    event = httpx.post(f"{base}/gradio_api/call/caption", json={"data": [{"path": str(secret)}, 3]}).json()
    stream = httpx.get(f"{base}/gradio_api/call/caption/{event['event_id']}", timeout=30).text
    assert "event: error" in stream and "private.png was not uploaded to this app" in stream
    assert '"caption"' not in stream


def test_uploads_over_the_size_limit_are_refused(server):
    big = server["folder"] / "big.bmp"
    big.write_bytes(b"BM" + b"\0" * (21 * 1024 * 1024))
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        caption(server, big)
    assert caption(server, server["scene"], 1)["tokens"]


def test_32_concurrent_requests_all_succeed_and_share_batches(server):
    folder = server["folder"]
    scenes = [write_scene(folder / f"c{i}.png", seed=i) for i in range(4)]
    bad = folder / "bad.txt"
    bad.write_text("not an image")
    service = server["service"]
    service.captions.batch_sizes.clear()

    def job(i):
        if i % 2:
            return answer(server, scenes[i % 4], "how many objects are there?")
        return caption(server, scenes[i % 4], 1 + i % 3)

    with ThreadPoolExecutor(max_workers=32) as pool:
        bad_futures = [pool.submit(caption, server, bad), pool.submit(answer, server, scenes[0], "")]
        results = list(pool.map(job, range(32)))
    assert all(len(r["answers"]) == 5 for r in results[1::2])
    assert all(isinstance(r["caption"], str) and len(r["attention"]) == len(r["tokens"]) for r in results[::2])
    for future in bad_futures:
        with pytest.raises(AppError):
            future.result()
    assert max(service.captions.batch_sizes) > 1 or max(service.answers.batch_sizes) > 1


# ---------------------------------------------------------------------------------------------- HTTP API


def _http(server, route, timeout=60, **kwargs):
    import httpx

    return httpx.post(server["url"] + "v1/" + route, timeout=timeout, **kwargs)


def test_cli_http_gradio_and_service_agree_on_the_same_image(server, capsys):
    """One image through the CLI, the HTTP API (multipart and base64 JSON), gradio_client and the app's
    service function: same caption, same warnings, same domain verdict, same answers."""
    import base64
    import json

    from mmapp.cli import main

    folder, scene = server["folder"], server["scene"]
    question = "what color is the ✨ circle?"
    assert main(["caption", str(scene), "--checkpoint", str(folder / "captioner.safetensors"), "--json",
                 "--beam-size", "2"]) == 0
    captured = capsys.readouterr()
    cli_caption = json.loads(captured.out)[0]
    assert "looks unlike the images the captioner was trained on" in captured.err
    assert main(["ask", str(scene), question, "--checkpoint", str(folder / "vqa.safetensors"), "--json"]) == 0
    captured = capsys.readouterr()
    cli_answer = json.loads(captured.out)
    assert "words the model does not know were ignored: '✨'" in captured.err

    picture = Image.open(scene).convert("RGB")
    service_caption = server["service"].caption(picture, 2).to_json()
    service_answer = server["service"].answer(picture, question).to_json()
    data = scene.read_bytes()
    http_caption = _http(server, "caption", files={"image": ("scene.png", data, "image/png")},
                         data={"beam_size": "2"})
    http_answer = _http(server, "answer", json={"image": base64.b64encode(data).decode(), "question": question,
                                                "filename": "scene.png"})
    assert http_caption.status_code == 200 and http_answer.status_code == 200
    gradio_caption = caption(server, scene, 2)
    gradio_answer = answer(server, scene, question)
    for got in (service_caption, http_caption.json(), gradio_caption):
        assert got["caption"] == cli_caption["caption"] and got["tokens"] == cli_caption["tokens"]
        assert got["warnings"] == cli_caption["warnings"] == []
        assert got["out_of_domain"]["flagged"] is cli_caption["out_of_domain"]["flagged"] is True
        assert got["out_of_domain"]["score"] == pytest.approx(cli_caption["out_of_domain"]["score"], abs=1e-4)
        assert got["score"] == pytest.approx(cli_caption["score"], abs=1e-4)
        np.testing.assert_allclose(got["attention"], cli_caption["attention"], atol=1e-4)
    for got in (service_answer, http_answer.json(), gradio_answer):
        assert [a["answer"] for a in got["answers"]] == [a["answer"] for a in cli_answer["answers"]]
        assert got["warnings"] == cli_answer["warnings"] == ["words the model does not know were ignored: '✨'"]
        assert got["question"] == cli_answer["question"]
    assert http_caption.json()["image"] == http_answer.json()["image"] == "scene.png"
    assert set(http_caption.json()) == set(cli_caption)  # the same keys as `mmapp caption --json`


@pytest.mark.parametrize("route, kwargs, status, message", [
    ("caption", {"files": {"image": ("notes.txt", b"hello", "text/plain")}}, 400,
     "notes.txt is not an image file PIL can read"),
    ("caption", {"json": {"image": "%%%"}}, 400, "not valid base64"),
    ("caption", {"json": {"beam_size": 3}}, 400, "no image given"),
    ("caption", {"content": b"[1, 2", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ("caption", {"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "multipart/form-data"),
    ("caption", {"scene": True, "data": {"beam_size": "11"}}, 400, "beam size must be a whole number from 1 to 10"),
    ("answer", {"scene": True, "data": {"question": "   "}}, 400, "the question is empty"),
    ("answer", {"scene": True, "data": {"question": "qué es esto"}}, 400, "none of the question's words are known"),
    ("answer", {"scene": True, "data": {}}, 400, "no question given"),
    ("answer", {"scene": True, "data": {"question": "what color?", "top_k": "0"}}, 400, "top-k must be"),
])
def test_http_errors_are_4xx_with_one_line(server, route, kwargs, status, message):
    if kwargs.pop("scene", False):
        kwargs["files"] = {"image": ("scene.png", server["scene"].read_bytes(), "image/png")}
    reply = _http(server, route, **kwargs)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_http_upload_over_the_limit_is_413(server):
    from mmapp.http_api import MAX_UPLOAD_BYTES

    reply = _http(server, "caption", files={"image": ("big.png", b"0" * (MAX_UPLOAD_BYTES + 70_000), "image/png")})
    assert reply.status_code == 413 and "20 MB" in reply.json()["error"]


def test_http_api_is_in_the_openapi_page(server):
    import httpx

    schema = httpx.get(server["url"] + "openapi.json", timeout=30).json()
    for route in ("/v1/caption", "/v1/answer"):
        body = schema["paths"][route]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "application/json"} <= set(body)
    assert "question" in schema["paths"]["/v1/answer"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]
    assert httpx.get(server["url"] + "docs", timeout=30).status_code == 200


def test_concurrent_http_requests_are_batched(server):
    service = server["service"]
    service.captions.batch_sizes.clear()
    data = server["scene"].read_bytes()

    def one(_):
        return _http(server, "caption", files={"image": ("scene.png", data, "image/png")}).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(one, range(12)))
    assert codes == [200] * 12 and max(service.captions.batch_sizes) > 1


def _voluntary_switches(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts a thread's wake-ups in Linux's /proc")
def test_the_idle_server_wakes_up_rarely(server):
    # Gradio's queue, left alone, polls every 1 ms (and for progress every 10 ms): ~1,100 wake-ups a
    # second of the server's thread, idle or not. Polling every 10 ms, about 130 (uvicorn's own tick too).
    thread = server["demo"].server.thread
    before, start = _voluntary_switches(thread.native_id), time.monotonic()
    time.sleep(1.0)
    per_second = (_voluntary_switches(thread.native_id) - before) / (time.monotonic() - start)
    assert per_second < 400, f"the idle server's thread woke up {per_second:.0f} times a second"
    assert caption(server, server["scene"])["caption"]  # and a UI request is still served


def test_http_replies_hold_the_values_json_would():
    import json

    from mmapp.http_api import JSONReply
    from mmapp.inference import rounded

    content = {"caption": "un café ✨", "score": -1.2345678901234567, "beam_size": 3, "flagged": True,
               "image": None, "attention": rounded(np.random.default_rng(0).random((3, 2, 2)), 5)}
    reply = JSONReply(content)
    assert reply.media_type == "application/json"
    assert json.loads(reply.body) == content and "café ✨" in reply.body.decode("utf-8")


def test_the_server_parses_http_and_runs_its_event_loop_in_c(server):
    # uvicorn takes httptools and uvloop when they are installed (pyproject.toml): a request's
    # parsing and the event loop's work are then C rather than Python (h11, asyncio)
    uvicorn_server = server["demo"].server
    assert uvicorn_server.config.http_protocol_class.__name__ == "HttpToolsProtocol"
    assert type(uvicorn_server.servers[0]).__module__.startswith("uvloop")
