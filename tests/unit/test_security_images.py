"""Unit tests for idp.security_images: the catalogue and its SVG files."""

import dataclasses
import itertools
import re
from pathlib import Path

import pytest
from lxml import etree

from idp import security_images
from idp.security_images import CATALOGUE, SecurityImage, get, is_valid

STATIC_DIR = Path(security_images.__file__).resolve().parent / "static"
IMAGE_DIR = STATIC_DIR / "security-images"
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
ID_PATTERN = re.compile(r"[a-z][a-z0-9-]*")
MAX_BYTES = 4096
MIN_CONTRAST = 4.5
# Everything a picture may be drawn with: shapes, one group, the root.
ALLOWED_ELEMENTS = {
    "svg",
    "g",
    "rect",
    "path",
    "circle",
    "ellipse",
    "line",
    "polygon",
    "polyline",
}

# The catalogue as first shipped, restated here. Decoys are derived from
# indexes into the catalogue, so these must stay its first entries, in this
# order, for ever; new pictures may only be appended after them.
SHIPPED_IDS = (
    "cat",
    "apple",
    "umbrella",
    "bicycle",
    "sun",
    "house",
    "guitar",
    "fish",
    "banana",
    "key",
    "aeroplane",
    "flower",
    "scissors",
    "bird",
    "cherry",
    "bell",
    "train",
    "rainbow",
    "castle",
    "drum",
    "rabbit",
    "grapes",
    "light-bulb",
    "rocket",
    "snowflake",
    "hammer",
    "turtle",
    "carrot",
    "book",
    "sailboat",
    "star",
    "lighthouse",
    "piano",
    "snail",
    "pizza",
    "camera",
    "helicopter",
    "fire",
    "crown",
    "pencil",
    "beetle",
    "ice-cream",
    "glasses",
    "car",
    "leaf",
    "gift",
    "tractor",
    "prawn",
    "cake",
    "diamond",
    "hot-air-balloon",
    "mountain",
    "shirt",
    "robot",
    "burger",
    "anchor",
    "palm-tree",
    "trophy",
    "headphones",
    "fried-egg",
    "dice",
    "cloud",
    "magnet",
    "telephone",
)


def parse_svg(data: bytes) -> etree._Element:
    """Parse without entities, DTDs or the network, as a hostile file must be."""
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
    )
    return etree.fromstring(data, parser)


def svg_problems(data: bytes) -> list[str]:
    """Everything that makes ``data`` unfit to be served as a security image."""
    problems = []
    if len(data) >= MAX_BYTES:
        problems.append(f"{len(data)} bytes, limit {MAX_BYTES}")
    try:
        root = parse_svg(data)
    except etree.XMLSyntaxError as error:
        return [*problems, f"not well-formed: {error}"]
    if root.getroottree().docinfo.doctype:
        problems.append("has a DOCTYPE")
    if root.tag != f"{{{SVG_NS}}}svg":
        problems.append(f"root is {root.tag}")
    if root.get("viewBox") != "0 0 96 96":
        problems.append(f"viewBox is {root.get('viewBox')!r}")
    for node in root.iter():
        if not isinstance(node.tag, str):
            problems.append(f"has a comment or processing instruction: {node!r}")
            continue
        namespace, _, name = node.tag.rpartition("}")
        if name == "script":
            problems.append("has a script element")
        elif name == "foreignObject":
            problems.append("has a foreignObject element")
        elif namespace != f"{{{SVG_NS}" or name not in ALLOWED_ELEMENTS:
            problems.append(f"unexpected element {node.tag}")
        for attribute, value in node.attrib.items():
            local = attribute.rpartition("}")[2]
            if local.lower().startswith("on"):
                problems.append(f"event handler attribute {attribute}")
            if local == "href" and not value.startswith("#"):
                problems.append(f"{attribute} points outside the document: {value}")
            if "url(" in value.replace(" ", "") and "url(#" not in value:
                problems.append(f"{attribute} references {value}")
    return problems


def relative_luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [
        c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def colours(image: SecurityImage) -> tuple[str, str]:
    """(background, icon colour) of a picture's file."""
    root = parse_svg((STATIC_DIR / image.static_path()).read_bytes())
    background = root.find(f"{{{SVG_NS}}}rect")
    group = root.find(f"{{{SVG_NS}}}g")
    assert background is not None and group is not None
    return background.get("fill").lower(), group.get("stroke").lower()


# The catalogue


def test_catalogue_is_big_enough():
    assert len(CATALOGUE) >= 48


def test_catalogue_is_append_only():
    assert tuple(image.id for image in CATALOGUE[: len(SHIPPED_IDS)]) == SHIPPED_IDS


def test_ids_are_unique_lowercase_ascii():
    ids = [image.id for image in CATALOGUE]
    assert len(set(ids)) == len(ids)
    for image_id in ids:
        assert ID_PATTERN.fullmatch(image_id), image_id
        assert image_id.isascii()


@pytest.mark.parametrize("field", ["name_ms", "name_en"])
def test_names_are_present_and_unique_per_language(field):
    names = [getattr(image, field) for image in CATALOGUE]
    for name in names:
        assert name and name == name.strip(), repr(name)
    assert len(set(names)) == len(names)
    assert len({name.casefold() for name in names}) == len(names)


def test_entries_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOGUE[0].id = "dog"


# Lookups


def test_get_finds_every_entry():
    for image in CATALOGUE:
        assert get(image.id) is image
        assert is_valid(image.id)


def test_get_known_example():
    cat = get("cat")
    assert cat == SecurityImage("cat", "kucing", "cat")


@pytest.mark.parametrize(
    "image_id",
    [
        "",
        "dog-that-is-not-there",
        "CAT",
        " cat",
        "cat ",
        "cat.svg",
        "security-images/cat.svg",
        "../x",
        "../cat",
        "cat/../cat",
        "..%2Fcat",
        "/etc/passwd",
        "cat\x00",
    ],
)
def test_get_refuses_unknown_and_path_like_ids(image_id):
    assert get(image_id) is None
    assert not is_valid(image_id)


@pytest.mark.parametrize("value", [None, 1, b"cat", ("cat",)])
def test_get_refuses_non_strings(value):
    assert get(value) is None
    assert not is_valid(value)


def test_name_by_locale():
    image = SecurityImage("umbrella", "payung", "umbrella")
    assert image.name("ms") == "payung"
    assert image.name("en") == "umbrella"


@pytest.mark.parametrize("locale", ["", "fr", "zh", "xx"])
def test_name_falls_back_to_malay(locale):
    image = SecurityImage("train", "kereta api", "train")
    assert image.name(locale) == "kereta api"


def test_static_path():
    assert get("hot-air-balloon").static_path() == "security-images/hot-air-balloon.svg"


# The files


def test_every_entry_has_its_file_and_every_file_an_entry():
    listed = {Path(image.static_path()).name for image in CATALOGUE}
    present = {path.name for path in IMAGE_DIR.glob("*.svg")}
    assert listed == present
    for image in CATALOGUE:
        assert (STATIC_DIR / image.static_path()).is_file()


@pytest.mark.parametrize("image", CATALOGUE, ids=lambda image: image.id)
def test_svg_is_safe_and_well_formed(image):
    data = (STATIC_DIR / image.static_path()).read_bytes()
    assert svg_problems(data) == []
    assert b"href" not in data
    assert len(data) < MAX_BYTES


@pytest.mark.parametrize("image", CATALOGUE, ids=lambda image: image.id)
def test_svg_colours_contrast(image):
    background, icon = colours(image)
    assert contrast(background, icon) >= MIN_CONTRAST, (background, icon)


def test_neighbours_look_different_and_schemes_vary():
    schemes = [colours(image) for image in CATALOGUE]
    pairs = zip(itertools.pairwise(CATALOGUE), itertools.pairwise(schemes), strict=True)
    for (first, second), (before, after) in pairs:
        assert before[0] != after[0], (first.id, second.id)
        assert before[1] != after[1], (first.id, second.id)
    assert len(set(schemes)) >= 8


def test_licence_and_provenance_are_shipped():
    licence = (IMAGE_DIR / "LICENSE.txt").read_text("utf-8")
    readme = (IMAGE_DIR / "README.md").read_text("utf-8")
    assert "Copyright" in licence
    assert "Permission" in licence
    assert "lucide-static" in readme
    assert re.search(r"version \d+\.\d+\.\d+", readme)
    assert "scripts/build-security-images" in readme


# The checker itself: it must catch what it is there to catch.

GOOD = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 96 96">'
    '<rect width="96" height="96" fill="#fff"/><g stroke="#000">{}</g></svg>'
)
XLINK = f'xmlns:xlink="{XLINK_NS}" '


def test_checker_accepts_a_plain_picture():
    assert svg_problems(GOOD.format('<path d="M0 0h10"/>').encode()) == []


@pytest.mark.parametrize(
    ("svg", "problem"),
    [
        (GOOD.format("<script>alert(1)</script>"), "script"),
        (
            GOOD.format('<script href="https://evil.example/x.js"/>'),
            "script",
        ),
        (GOOD.format('<path d="M0 0" onclick="alert(1)"/>'), "event handler"),
        (GOOD.replace("<svg ", '<svg onload="alert(1)" '), "event handler"),
        (
            GOOD.format(
                "<foreignObject><div xmlns='http://www.w3.org/1999/xhtml'/>"
                "</foreignObject>"
            ),
            "foreignObject",
        ),
        (GOOD.format('<image href="https://evil.example/a.png"/>'), "outside"),
        (
            GOOD.replace("<svg ", "<svg " + XLINK).format(
                '<use xlink:href="https://evil.example/s.svg#a"/>'
            ),
            "outside",
        ),
        (GOOD.format('<rect fill="url(https://evil.example/p)"/>'), "references"),
        (GOOD.format("<style>@import url(x.css);</style>"), "unexpected element"),
        (GOOD.format("<!-- MIT License, Copyright ... -->"), "comment"),
        (GOOD.replace("0 0 96 96", "0 0 24 24").format(""), "viewBox"),
        ('<html xmlns="http://www.w3.org/1999/xhtml" viewBox="0 0 96 96"/>', "root"),
        (GOOD.format(f'<path d="{"M0 0" * 1100}"/>'), "bytes"),
        (
            '<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            + GOOD.format("<text>&x;</text>"),
            "DOCTYPE",
        ),
        (GOOD.format("<path"), "not well-formed"),
    ],
)
def test_checker_catches_bad_pictures(svg, problem):
    problems = svg_problems(svg.encode())
    assert any(problem in found for found in problems), problems
