"""The image device: look at and edit images with Pillow, draw shapes and simple bar charts, and
describe an image when a multimodal model is configured (:mod:`.vision`).

Inputs are any readable image files; outputs are always new files under the device's own
folder (``<data_dir>/devices/image/images``, or the setting ``output_dir``) with a fresh name, so
nothing is overwritten. Every result that wrote a file names it under ``saved_file``
(:data:`llmos.kernel.devices.SAVED_FILE`), which the desktop shell shows inline.
Images larger than ``MAX_SIDE`` pixels a side (or ``MAX_PIXELS`` in all) are refused before
they are decoded, which also stops decompression bombs.
"""

from __future__ import annotations

import logging
import math
import uuid
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import ExifTags, Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from llmos.kernel.devices import SAVED_FILE, Device, DeviceContext, DeviceError, Example, Untrusted, current_call

from .vision import Vision, VisionSettings

log = logging.getLogger(__name__)

MAX_SIDE = 10_000
MAX_PIXELS = 40_000_000
MAX_BARS = 60
Side = Annotated[int, {"minimum": 1, "maximum": MAX_SIDE}]
_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF"}
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}

device = Device(
    "image",
    version="1.0.0",
    description="Image files: information, resize, thumbnail, crop, rotate, convert, add text and shapes, "
                "bar charts, describe.",
    permissions=["files.read", "files.write"],
)

class Images:
    """One device instance: where its images go, its settings, and its vision model once loaded."""

    def __init__(self, out: Path, settings: dict[str, Any]) -> None:
        self.out = out
        self.settings = settings
        self.vision = Vision()


@device.setup
def _setup(context: DeviceContext) -> Images:
    out = Path(str(context.settings.get("output_dir") or context.data_dir / "images")).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    return Images(out, dict(context.settings))


def _images() -> Images:
    """The calling instance's state (every call reads it from its CallContext)."""
    return current_call().state_as(Images)


def _check_size(width: int, height: int, what: str) -> None:
    if width < 1 or height < 1:
        raise DeviceError(f"{what} would be empty ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise DeviceError(f"{what} is too large ({width}x{height}); the limit is {MAX_SIDE:,} px a side "
                          f"and {MAX_PIXELS:,} px in all")


def _open(path: str) -> Image.Image:
    """Open and decode an image, refusing missing files, non-images and oversized images."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DeviceError(f"no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)
            _check_size(image.width, image.height, f"the image {path}")
            image.load()
    except DeviceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DeviceError(f"refused {path}: it looks like a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise DeviceError(f"{path} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DeviceError(f"could not read the image {path}: {exc}") from None
    return image


def _save(image: Image.Image, source: str, operation: str, fmt: str | None = None) -> dict[str, Any]:
    """Write ``image`` under the device folder with a fresh name (unless the call was cancelled:
    then nothing is written); the result page for the model."""
    out = _images().out
    fmt = fmt if fmt in _EXTENSIONS else "PNG"
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = _flatten(image)
    elif fmt in ("BMP", "WEBP") and image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    stem = Path(source).stem[:40] or "image"
    target = out / f"{stem}-{operation}-{uuid.uuid4().hex[:8]}.{_EXTENSIONS[fmt]}"
    try:
        with current_call().commit():
            image.save(target, format=fmt)
    except (OSError, ValueError) as exc:
        target.unlink(missing_ok=True)
        raise DeviceError(f"could not write {fmt} image: {exc}") from None
    log.info("image.%s wrote %s", operation, target)
    return {SAVED_FILE: str(target), "width": image.width, "height": image.height, "format": fmt.lower()}


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on a white background (for formats without transparency)."""
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, "white")
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _exif_summary(image: Image.Image) -> dict[str, str]:
    summary: dict[str, str] = {}
    for tag, value in image.getexif().items():
        name = ExifTags.TAGS.get(tag, str(tag))
        if isinstance(value, bytes) or name in ("ExifOffset", "GPSInfo"):
            continue
        summary[name] = str(value)[:80]
        if len(summary) >= 20:
            break
    return summary


@device.call(examples=[Example("What size is photo.jpg?", {"path": "photo.jpg"})], timeout_s=10.0)
def info(path: str) -> dict[str, Any]:
    """Format, size, colour mode and EXIF summary of an image file.

    Args:
        path: The image file.
    """
    image = _open(path)
    return {"path": str(Path(path).expanduser()), "format": image.format, "width": image.width,
            "height": image.height, "mode": image.mode, "exif": _exif_summary(image)}


@device.call(examples=[Example("Resize photo.jpg to 800 by 600", {"path": "photo.jpg", "width": 800, "height": 600})],
             timeout_s=20.0, side_effects=True)
def resize(path: str, width: Side, height: Side) -> dict[str, Any]:
    """Resize an image to exactly width x height pixels (a new file).

    Args:
        path: The image file.
        width: New width in pixels.
        height: New height in pixels.
    """
    _check_size(width, height, "the resized image")
    image = _open(path)
    return _save(image.resize((width, height), Image.Resampling.LANCZOS), path, "resized", image.format)


@device.call(examples=[Example("Make a 200x200 thumbnail of photo.jpg", {"path": "photo.jpg", "max_size": 200})],
             timeout_s=20.0, side_effects=True)
def thumbnail(path: str, max_size: Annotated[int, {"minimum": 1, "maximum": 2_000}] = 256) -> dict[str, Any]:
    """Shrink an image to fit in max_size x max_size, keeping its proportions (a new file).

    Args:
        path: The image file.
        max_size: Longest side of the thumbnail in pixels.
    """
    image = _open(path)
    fmt = image.format
    image = ImageOps.exif_transpose(image) or image
    image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return _save(image, path, "thumb", fmt)


@device.call(examples=[Example("Crop photo.jpg to the box from (10, 20) to (310, 220)",
                               {"path": "photo.jpg", "left": 10, "top": 20, "right": 310, "bottom": 220})],
             timeout_s=20.0, side_effects=True)
def crop(path: str, left: int, top: int, right: int, bottom: int) -> dict[str, Any]:
    """Cut out the rectangle (left, top)-(right, bottom) of an image, in pixels (a new file).

    Args:
        path: The image file.
        left: Left edge in pixels.
        top: Top edge in pixels.
        right: Right edge in pixels (exclusive).
        bottom: Bottom edge in pixels (exclusive).
    """
    image = _open(path)
    if not (0 <= left < right <= image.width and 0 <= top < bottom <= image.height):
        raise DeviceError(f"the box ({left}, {top})-({right}, {bottom}) is not inside the "
                          f"{image.width}x{image.height} image")
    return _save(image.crop((left, top, right, bottom)), path, "crop", image.format)


@device.call(examples=[Example("Rotate photo.jpg by 90 degrees", {"path": "photo.jpg", "degrees": 90})],
             timeout_s=20.0, side_effects=True)
def rotate(path: str, degrees: float) -> dict[str, Any]:
    """Rotate an image counter-clockwise by some degrees, growing the canvas to fit (a new file).

    Args:
        path: The image file.
        degrees: Angle counter-clockwise; negative turns clockwise.
    """
    if not math.isfinite(degrees):
        raise DeviceError("degrees must be a finite number")
    image = _open(path)
    radians = math.radians(degrees)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    _check_size(round(image.width * cos + image.height * sin), round(image.width * sin + image.height * cos),
                "the rotated image")
    return _save(image.rotate(degrees, expand=True, resample=Image.Resampling.BICUBIC), path, "rotated", image.format)


@device.call(examples=[Example("Convert photo.png to JPEG", {"path": "photo.png", "format": "jpeg"})],
             timeout_s=20.0, side_effects=True)
def convert(path: str, format: Literal["png", "jpeg", "webp", "gif", "bmp", "tiff"]) -> dict[str, Any]:
    """Save an image in another file format (a new file).

    Args:
        path: The image file.
        format: The target format.
    """
    return _save(_open(path), path, "converted", _FORMATS[format])


@device.call(examples=[Example("Write 'Hello' at the top left of photo.jpg",
                               {"path": "photo.jpg", "text": "Hello", "x": 10, "y": 10})],
             timeout_s=20.0, side_effects=True)
def draw_text(path: str, text: str, x: int, y: int, size: Annotated[int, {"minimum": 4, "maximum": 400}] = 24,
              color: str = "black") -> dict[str, Any]:
    """Write text onto an image at pixel position (x, y) (a new file).

    Args:
        path: The image file.
        text: The text to write.
        x: Left edge of the text in pixels.
        y: Top edge of the text in pixels.
        size: Font size in pixels.
        color: A colour name or '#rrggbb'.
    """
    image = _open(path)
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    try:
        ImageDraw.Draw(image).text((x, y), text[:500], fill=color, font=ImageFont.load_default(size=size))
    except ValueError as exc:
        raise DeviceError(f"could not draw the text: {exc}") from None
    return _save(image, path, "text", image.format)


@device.call(examples=[Example("Draw a red rectangle from (10, 10) to (100, 80) on photo.jpg",
                               {"path": "photo.jpg", "shape": "rectangle", "x0": 10, "y0": 10, "x1": 100,
                                "y1": 80, "color": "red"})],
             timeout_s=20.0, side_effects=True)
def draw_shape(path: str, shape: Literal["rectangle", "ellipse", "line"], x0: int, y0: int, x1: int, y1: int,
               color: str = "red", fill: str | None = None,
               width: Annotated[int, {"minimum": 1, "maximum": 100}] = 3) -> dict[str, Any]:
    """Draw a rectangle, an ellipse (inside the box) or a line from (x0, y0) to (x1, y1) (a new file).

    Args:
        path: The image file.
        shape: rectangle, ellipse or line.
        x0: First corner (or start of the line), pixels from the left.
        y0: First corner (or start of the line), pixels from the top.
        x1: Opposite corner (or end of the line), pixels from the left.
        y1: Opposite corner (or end of the line), pixels from the top.
        color: Outline (or line) colour: a name or '#rrggbb'.
        fill: Fill colour for a rectangle or ellipse; none = only the outline.
        width: Outline (or line) width in pixels.
    """
    image = _open(path)
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    draw = ImageDraw.Draw(image)
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    try:
        if shape == "line":
            draw.line((x0, y0, x1, y1), fill=color, width=width)
        elif shape == "rectangle":
            draw.rectangle(box, outline=color, fill=fill, width=width)
        else:
            draw.ellipse(box, outline=color, fill=fill, width=width)
    except ValueError as exc:  # an unknown colour name
        raise DeviceError(f"could not draw the {shape}: {exc}") from None
    return _save(image, path, shape, image.format)


@device.call(examples=[Example("What is in the picture photo.jpg?", {"path": "photo.jpg"})], timeout_s=300.0)
def describe(path: str, question: Annotated[str, {"maxLength": 500}] = "Describe this image.") -> Untrusted:
    """Describe an image (or answer a question about it) with the configured vision model.

    Args:
        path: The image file.
        question: What to ask about the image.
    """
    images = _images()
    settings = VisionSettings.from_settings(images.settings)  # "vision is not configured" first
    image = _open(path)
    text = images.vision.describe(settings, image, question or "Describe this image.")
    if not text:
        raise DeviceError("the vision model gave no description")
    # what a model read out of a picture can carry the picture's text: untrusted, like a file
    return Untrusted({"path": str(Path(path).expanduser()), "description": text}, source=f"image:{path}")


@device.call(examples=[Example("Draw a bar chart of sales 3, 7 and 5 for Jan, Feb, Mar",
                               {"values": [3, 7, 5], "labels": ["Jan", "Feb", "Mar"], "title": "Sales"})],
             timeout_s=20.0, side_effects=True)
def chart(values: list[float], labels: list[str] | None = None, title: str = "") -> dict[str, Any]:
    """Draw a simple bar chart as a PNG image (a new file).

    Args:
        values: The bar heights.
        labels: A label under each bar (as many as values).
        title: A title above the chart.
    """
    if not values or len(values) > MAX_BARS:
        raise DeviceError(f"give between 1 and {MAX_BARS} values")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise DeviceError("every value must be a finite number")
    if labels is not None and len(labels) != len(values):
        raise DeviceError(f"{len(labels)} labels for {len(values)} values: give one label per value")
    width, height, margin, top = 800, 500, 60, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=22), ImageFont.load_default(size=13)
    if title:
        draw.text((width / 2, 20), title[:80], fill="black", font=font, anchor="mt")
    low, high = min(0.0, *values), max(0.0, *values)
    span = (high - low) or 1.0
    plot_h = height - top - margin

    def y_of(v: float) -> float:
        return top + (high - v) / span * plot_h

    slot = (width - 2 * margin) / len(values)
    zero = y_of(0.0)
    draw.line((margin, zero, width - margin, zero), fill="black", width=2)
    for i, value in enumerate(values):
        x0 = margin + i * slot + slot * 0.15
        x1 = margin + (i + 1) * slot - slot * 0.15
        draw.rectangle((x0, min(zero, y_of(value)), x1, max(zero, y_of(value))), fill="#4a7bd0", outline="#2a4b90")
        draw.text(((x0 + x1) / 2, y_of(value) - 4 if value >= 0 else y_of(value) + 4), f"{value:g}",
                  fill="black", font=small, anchor="mb" if value >= 0 else "mt")
        if labels:
            draw.text(((x0 + x1) / 2, height - margin + 22), labels[i][:20], fill="black", font=small, anchor="mt")
    return _save(image, title or "chart", "chart", "PNG")
