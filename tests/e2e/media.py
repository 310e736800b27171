"""The help page's media, made from the browser runs.

:class:`Shots` saves a screenshot of each step the help page shows, under the
name ``idp/views/help.py`` gives it (``<figure>.<lang>.png``), as a palette
PNG: screenshots of flat pages lose nothing visible at 256 colours and shrink
to a fraction. :func:`build_video` turns one flow's screenshots into a WebM
with ffmpeg (Debian's) and writes its WebVTT captions from the same figure
texts the page shows, so picture, caption and page say the same thing.
:func:`print_pdf` prints a page to PDF with Chromium's DevTools
``Page.printToPDF``.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from idp.views.help import FIGURES, Figure

# Each step stays on screen this long in a walkthrough video.
STEP_SECONDS = 5
VIDEO_WIDTH = 960
COLOURS = 256


class Shots:
    """Saves screenshots for one language; remembers which it took."""

    def __init__(self, directory: Path, lang: str, *, shrink: bool = True) -> None:
        self.directory = directory
        self.lang = lang
        # Off in test runs, whose screenshots nobody ships: the palette
        # quantisation and PNG optimisation cost about 0.2 s of CPU a shot.
        self.shrink = shrink
        self.taken: set[str] = set()

    def __call__(self, driver, name: str) -> None:
        # The top of the page: its title and first fields tell the step.
        driver.execute_script("window.scrollTo(0, 0)")
        png = driver.get_screenshot_as_png()
        path = self.directory / f"{name}.{self.lang}.png"
        if self.shrink:
            save_png(png, path)
        else:
            path.write_bytes(png)
        self.taken.add(name)


def save_png(png: bytes, path: Path) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)


def _timestamp(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes // 60):02d}:{int(minutes % 60):02d}:{rest:06.3f}"


def captions(figures: list[Figure], translate) -> str:
    """WebVTT: each figure's text while its picture is on screen."""
    cues = ["WEBVTT", ""]
    for number, figure in enumerate(figures):
        start, end = number * STEP_SECONDS, (number + 1) * STEP_SECONDS
        cues += [
            str(number + 1),
            f"{_timestamp(start)} --> {_timestamp(end)}",
            translate(figure.text),
            "",
        ]
    return "\n".join(cues)


def flow_figures(section: str) -> list[Figure]:
    return [figure for figure in FIGURES if figure.section == section]


def build_video(frames: Path, section: str, lang: str, target: Path) -> None:
    """One flow's screenshots in ``lang``, STEP_SECONDS each, as a VP9 WebM."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is missing (apt-get install ffmpeg)")
    with tempfile.TemporaryDirectory(prefix="idp-video-") as work:
        listing = Path(work) / "frames.txt"
        lines = []
        figures = flow_figures(section)
        for figure in figures:
            lines += [
                f"file '{frames / f'{figure.name}.{lang}.png'}'",
                f"duration {STEP_SECONDS}",
            ]
        # The concat demuxer takes the last duration only if the file repeats.
        lines.append(f"file '{frames / f'{figures[-1].name}.{lang}.png'}'")
        listing.write_text("\n".join(lines) + "\n")
        subprocess.run(
            [
                ffmpeg,
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "concat",
                "-safe",
                "0",
                "-i",
                str(listing),
                "-vf",
                f"scale={VIDEO_WIDTH}:-2:flags=lanczos,fps=5,format=yuv420p",
                "-c:v",
                "libvpx-vp9",
                "-b:v",
                "0",
                "-crf",
                "40",
                "-row-mt",
                "1",
                "-an",
                str(target),
            ],
            check=True,
            timeout=300,
        )


def print_pdf(driver, target: Path) -> None:
    """The page now in ``driver`` as an A4 PDF, backgrounds on."""
    result = driver.execute_cdp_cmd(
        "Page.printToPDF",
        {
            "printBackground": True,
            "preferCSSPageSize": False,
            "paperWidth": 8.27,
            "paperHeight": 11.69,
            "marginTop": 0.5,
            "marginBottom": 0.5,
            "marginLeft": 0.5,
            "marginRight": 0.5,
        },
    )
    target.write_bytes(base64.b64decode(result["data"]))


def localizer(lang: str):
    from pyramid.i18n import make_localizer

    locale_dir = Path(__file__).resolve().parents[2] / "idp" / "locale"
    return make_localizer(lang, [str(locale_dir)])


def build(frames: Path, target: Path) -> list[Path]:
    """Screenshots, captions and videos for the help page, from one run's frames."""
    from idp.views.help import LANGUAGES, VIDEOS, figure_path, video_paths

    static = target.parent  # idp/static/, as the page's paths start at help/
    written = []
    for lang in LANGUAGES:
        translate = localizer(lang).translate
        for figure in FIGURES:
            source = frames / f"{figure.name}.{lang}.png"
            if not source.exists():
                raise RuntimeError(f"the browser run made no {source.name}")
            destination = static / figure_path(figure, lang)
            shutil.copyfile(source, destination)
            written.append(destination)
        for flow in VIDEOS:
            video, vtt = (static / path for path in video_paths(flow, lang))
            vtt.write_text(captions(flow_figures(flow), translate), encoding="utf-8")
            build_video(frames, flow, lang, video)
            written += [vtt, video]
    return written


if __name__ == "__main__":
    import sys

    for path in build(Path(sys.argv[1]), Path(sys.argv[2])):
        print(f"{path}  {path.stat().st_size // 1024} KiB")
