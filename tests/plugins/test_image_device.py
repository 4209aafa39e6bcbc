"""The image device, called the way the kernel calls it, on images made in the test."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.dispatch import Dispatcher, GrantPolicy, SyscallResult
from llmos.plugins.image import device


@pytest.fixture()
def dispatcher(tmp_path: Path) -> Dispatcher:
    registry = DeviceRegistry()
    registry.register(device)
    registry.start(tmp_path / "data")
    return Dispatcher(registry, GrantPolicy(granted=["files.read", "files.write"]))


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    image = Image.new("RGB", (400, 300), "red")
    image.paste((0, 0, 255), (0, 0, 200, 150))  # blue top-left quarter
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0110] = "Model 1"  # Model
    path = tmp_path / "photo.jpg"
    image.save(path, "JPEG", exif=exif)
    return path


def ok(result: SyscallResult) -> dict:
    assert result.ok, result.error
    assert result.trusted is True
    return result.value


def in_output_folder(value: dict, tmp_path: Path) -> Image.Image:
    out = Path(value["saved_file"])
    assert out.is_file() and out.parent == tmp_path / "data" / "devices" / "image" / "images"
    image = Image.open(out)
    assert image.size == (value["width"], value["height"])
    return image


def test_info(dispatcher, photo):
    value = ok(dispatcher.call_blocking("image.info", {"path": str(photo)}))
    assert value["format"] == "JPEG" and (value["width"], value["height"]) == (400, 300)
    assert value["mode"] == "RGB"
    assert value["exif"]["Make"] == "TestCam" and value["exif"]["Model"] == "Model 1"


def test_resize_and_thumbnail(dispatcher, photo, tmp_path):
    value = ok(dispatcher.call_blocking("image.resize", {"path": str(photo), "width": 100, "height": 50}))
    assert in_output_folder(value, tmp_path).size == (100, 50)
    thumb = ok(dispatcher.call_blocking("image.thumbnail", {"path": str(photo), "max_size": 200}))
    assert (thumb["width"], thumb["height"]) == (200, 150)
    assert in_output_folder(thumb, tmp_path).format == "JPEG"
    assert thumb["saved_file"] != value["saved_file"]
    assert Image.open(photo).size == (400, 300)  # the original is untouched


def test_crop_rotate_convert(dispatcher, photo, tmp_path):
    crop = ok(dispatcher.call_blocking("image.crop", {"path": str(photo), "left": 0, "top": 0, "right": 200, "bottom": 150}))
    cropped = in_output_folder(crop, tmp_path).convert("RGB")
    assert cropped.size == (200, 150)
    r, g, b = cropped.getpixel((100, 75))
    assert b > 200 and r < 60  # the blue quarter
    bad = dispatcher.call_blocking("image.crop", {"path": str(photo), "left": 0, "top": 0, "right": 500, "bottom": 10})
    assert not bad.ok and "not inside" in bad.error

    rotated = ok(dispatcher.call_blocking("image.rotate", {"path": str(photo), "degrees": 90}))
    assert (rotated["width"], rotated["height"]) == (300, 400)

    png = ok(dispatcher.call_blocking("image.convert", {"path": str(photo), "format": "png"}))
    assert png["saved_file"].endswith(".png") and in_output_folder(png, tmp_path).format == "PNG"
    rgba = tmp_path / "alpha.png"
    Image.new("RGBA", (20, 20), (0, 255, 0, 128)).save(rgba)
    jpeg = ok(dispatcher.call_blocking("image.convert", {"path": str(rgba), "format": "jpeg"}))
    assert in_output_folder(jpeg, tmp_path).mode == "RGB"


def test_draw_text_changes_pixels(dispatcher, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 80), "white").save(blank)
    value = ok(dispatcher.call_blocking("image.draw_text", {"path": str(blank), "text": "Hello", "x": 10, "y": 10}))
    drawn = in_output_folder(value, tmp_path).convert("L")
    assert drawn.getextrema()[0] < 100  # some dark text pixels
    bad = dispatcher.call_blocking("image.draw_text",
                                   {"path": str(blank), "text": "x", "x": 1, "y": 1, "color": "no-such-colour"})
    assert not bad.ok and "could not draw" in bad.error


def test_draw_shapes(dispatcher, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 100), "white").save(blank)
    rect = ok(dispatcher.call_blocking("image.draw_shape", {"path": str(blank), "shape": "rectangle", "x0": 10,
                                                            "y0": 10, "x1": 60, "y1": 50, "color": "red",
                                                            "fill": "blue", "width": 2}))
    drawn = in_output_folder(rect, tmp_path).convert("RGB")
    assert drawn.getpixel((10, 30))[0] > 200 and drawn.getpixel((10, 30))[2] < 60  # red outline
    assert drawn.getpixel((35, 30)) == (0, 0, 255)  # blue fill
    assert drawn.getpixel((150, 80)) == (255, 255, 255)  # untouched outside
    ellipse = ok(dispatcher.call_blocking("image.draw_shape", {"path": str(blank), "shape": "ellipse", "x0": 100,
                                                               "y0": 0, "x1": 200, "y1": 100, "fill": "black"}))
    oval = in_output_folder(ellipse, tmp_path).convert("L")
    assert oval.getpixel((150, 50)) < 30 and oval.getpixel((101, 1)) > 200  # centre filled, corner not
    line = ok(dispatcher.call_blocking("image.draw_shape", {"path": str(blank), "shape": "line", "x0": 0, "y0": 99,
                                                            "x1": 199, "y1": 99, "color": "#00ff00", "width": 1}))
    assert in_output_folder(line, tmp_path).convert("RGB").getpixel((100, 99)) == (0, 255, 0)
    bad = dispatcher.call_blocking("image.draw_shape", {"path": str(blank), "shape": "star", "x0": 0, "y0": 0,
                                                        "x1": 1, "y1": 1})
    assert not bad.ok and "invalid arguments" in bad.error
    colour = dispatcher.call_blocking("image.draw_shape", {"path": str(blank), "shape": "line", "x0": 0, "y0": 0,
                                                           "x1": 1, "y1": 1, "color": "no-such-colour"})
    assert not colour.ok and "could not draw the line" in colour.error


def test_describe_without_a_vision_model_says_so(dispatcher, photo):
    result = dispatcher.call_blocking("image.describe", {"path": str(photo)})
    assert not result.ok and result.error.startswith("vision is not configured")
    assert "vision_model" in result.error and "vision_projector" in result.error


def test_describe_with_bad_vision_settings_names_the_problem(tmp_path, photo):
    from llmos.kernel.testing import call_device

    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("not a model")
    cases = [({"vision_model": str(tmp_path / "none.gguf"), "vision_projector": str(not_gguf)}, "does not exist"),
             ({"vision_model": str(not_gguf), "vision_projector": str(not_gguf)}, "is not a GGUF file"),
             ({"vision_model": str(not_gguf), "vision_projector": str(not_gguf), "vision_handler": "nope"},
              "unknown vision_handler")]
    for settings, message in cases:
        result = call_device(device, "describe", {"path": str(photo)}, grants=["files.read", "files.write"],
                             data_dir=tmp_path / "d", settings=settings)
        assert not result.ok and message in result.error, result.error


def test_the_vision_handlers_exist_in_llama_cpp():
    from llama_cpp import llama_chat_format

    from llmos.plugins.image.vision import HANDLERS

    assert all(hasattr(llama_chat_format, name) for name in HANDLERS.values())


def test_output_dir_setting(tmp_path, photo):
    from llmos.kernel.testing import call_device

    out = tmp_path / "Pictures" / "llmos"
    result = call_device(device, "thumbnail", {"path": str(photo), "max_size": 64},
                         grants=["files.read", "files.write"], data_dir=tmp_path / "d", settings={"output_dir": str(out)})
    assert result.ok and Path(result.value["saved_file"]).parent == out


def test_chart(dispatcher, tmp_path):
    value = ok(dispatcher.call_blocking("image.chart", {"values": [3, 7, -2, 5], "labels": ["a", "b", "c", "d"],
                                                        "title": "Sales"}))
    chart = in_output_folder(value, tmp_path).convert("RGB")
    assert chart.size == (800, 500)
    colours = {colour for _, colour in chart.getcolors(maxcolors=100_000)}
    assert (0x4A, 0x7B, 0xD0) in colours  # the bars
    assert not dispatcher.call_blocking("image.chart", {"values": []}).ok
    mismatch = dispatcher.call_blocking("image.chart", {"values": [1, 2], "labels": ["one"]})
    assert not mismatch.ok and "one label per value" in mismatch.error


def test_bad_inputs_are_clear_errors(dispatcher, tmp_path):
    missing = dispatcher.call_blocking("image.info", {"path": str(tmp_path / "nope.png")})
    assert not missing.ok and "no such file" in missing.error
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    garbage = dispatcher.call_blocking("image.thumbnail", {"path": str(text), "max_size": 10})
    assert not garbage.ok and "not an image" in garbage.error
    small = tmp_path / "small.png"
    Image.new("L", (10, 10)).save(small)
    huge = dispatcher.call_blocking("image.resize", {"path": str(small), "width": 20_000, "height": 10})
    assert not huge.ok and "invalid arguments" in huge.error  # the schema's maximum
    big = dispatcher.call_blocking("image.resize", {"path": str(small), "width": 10_000, "height": 10_000})
    assert not big.ok and "too large" in big.error


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb as Pillow sees it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(30_000, 30_000), (100_000, 100_000)])
def test_decompression_bomb_refused(dispatcher, tmp_path, size):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(*size))
    result = dispatcher.call_blocking("image.thumbnail", {"path": str(bomb), "max_size": 100})
    assert not result.ok
    assert "too large" in result.error or "decompression bomb" in result.error


def test_permissions_and_examples(tmp_path, photo):
    registry = DeviceRegistry()
    registry.register(device)
    registry.start(tmp_path / "data")
    denied = Dispatcher(registry, GrantPolicy(granted=["files.read"])).call_blocking("image.info", {"path": str(photo)})
    assert not denied.ok and "files.write" in denied.error
    assert all(call.examples for call in device.calls.values())
