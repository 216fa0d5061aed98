"""`ncd site`: the static site of the gallery (every file, every definition's diagram, source
and generated module), a broken file reported without stopping the others, and the pages
drawn by a real browser without a console message."""

from __future__ import annotations

import html.parser
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import browser
import pytest
from defusedxml.ElementTree import fromstring

from ncd.cli import main
from ncd.site import build_site

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "gallery"


class Links(html.parser.HTMLParser):
    """Every address a page refers to (`href`, `src`), and whether it has scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.addresses: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.addresses.extend(value for name, value in attrs
                              if name in ("href", "src") and value is not None)


def links(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    reports: list[str] = []
    assert build_site([GALLERY], out, report=reports.append) == 0, "\n".join(reports)
    return out


def test_the_index_lists_every_gallery_file(site: Path) -> None:
    index = (site / "index.html").read_text(encoding="utf-8")
    sources = sorted(GALLERY.glob("*.ncd"))
    assert sources
    for source in sources:
        assert f'href="{source.stem}.html"' in index
        assert (site / f"{source.stem}.html").is_file()
    assert "<h2><a href=\"transformer.html\">transformer</a></h2>" in index


def test_every_definition_has_its_diagram_source_and_module(site: Path) -> None:
    page = (site / "transformer.html").read_text(encoding="utf-8")
    for name in ("feedforward", "transformer"):
        assert f'id="def-{name}"' in page
        svg = site / f"transformer.{name}.svg"
        assert fromstring(svg.read_bytes()).tag.endswith("svg")
        assert f'src="transformer.{name}.svg"' in page
    # The source, numbered as in the file and escaped (`->` is `-&gt;`).
    assert '<span class="l" data-n="12">def transformer(X: R[x, m]) -&gt; R[x, m] {' in page
    assert "gallery/transformer.ncd, lines 12–23" in page
    # The generated PyTorch module of each definition.
    assert "class Transformer(nn.Module):" in page and "class Feedforward(nn.Module):" in page
    # The imported definition is on its own file's page, linked from here.
    assert 'id="def-attention"' not in page and 'imports <a href="attention.html">' in page
    # Each definition's panels: its source and its module, nothing made up beside them.
    assert set(re.findall(r"<h3>([^<]*)</h3>", page)) == {"Declarations", "Source", "PyTorch"}


def test_every_address_resolves_inside_the_site(site: Path) -> None:
    pages = sorted(site.glob("*.html"))
    assert len(pages) == len(list(GALLERY.glob("*.ncd"))) + 1
    for page in pages:
        found = links(page)
        assert found.scripts == 0, page
        for address in found.addresses:
            parts = urlsplit(address)
            assert not parts.scheme and not parts.netloc, f"{page.name}: {address}"
            target = site / unquote(parts.path) if parts.path else page
            assert target.is_file(), f"{page.name}: {address}"
            if parts.fragment and target.suffix == ".html":
                assert f'id="{parts.fragment}"' in target.read_text(encoding="utf-8")


SYMBOLIC = '''axis x, m
def free(X: R[x, m]) -> R[x, m] {
    return linear[m -> m](X, W)
}
'''

BROKEN = '''def f(X: R[x]) -> R[x] {
    return relu(X) </pre><script>alert(1)</script>
}
'''


def test_a_broken_file_is_reported_and_the_others_built(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.ncd").write_text(BROKEN, encoding="utf-8")
    (models / "free.ncd").write_text(SYMBOLIC, encoding="utf-8")
    (models / ".hidden").mkdir()
    (models / ".hidden" / "skipped.ncd").write_text(BROKEN, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["site", str(models), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "broken.ncd:2:" in err and "error[E" in err and "broken.ncd: 1 error" in err
    assert "skipped" not in err and not (out / "skipped.html").exists()

    broken = (out / "broken.html").read_text(encoding="utf-8")
    assert "does not check" in broken and "error[E" in broken
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in broken
    assert "<script>" not in broken
    # The symbolic parameter size cannot be compiled (E312): the page says why, drawn all
    # the same.
    free = (out / "free.html").read_text(encoding="utf-8")
    assert (out / "free.free.svg").is_file()
    assert "does not compile to a PyTorch module" in free and "E312" in free
    assert "class Free" not in free
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'href="broken.html"' in index and 'href="free.html"' in index


def test_size_overrides_go_to_the_files_that_declare_the_axis(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "free.ncd").write_text(SYMBOLIC, encoding="utf-8")
    (tmp_path / "other.ncd").write_text(
        "axis k = 3\ndef g(X: R[k]) -> R[k] {\n    return relu(X)\n}\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["site", str(tmp_path / "free.ncd"), str(tmp_path / "other.ncd"),
                 "-o", str(out), "-D", "m=16"]) == 0
    free = (out / "free.html").read_text(encoding="utf-8")
    assert "class Free(nn.Module):" in free and "torch.empty(16, 16)" in free
    assert main(["site", str(tmp_path / "other.ncd"), "-o", str(out), "-D", "q=2"]) == 2
    assert "no file declares an axis `q`" in capsys.readouterr().err


def test_diagnostics_are_coloured_on_request(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.ncd").write_text(BROKEN, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["site", str(tmp_path), "-o", str(out), "--color", "always"]) == 1
    assert "\x1b[31merror[E101]" in capsys.readouterr().err
    assert "\x1b" not in (out / "broken.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("case", ["missing", "empty folder", "output is a file"])
def test_usage_errors_exit_2(case: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("", encoding="utf-8")
    argv = {"missing": ["site", str(tmp_path / "absent"), "-o", str(tmp_path / "out")],
            "empty folder": ["site", str(tmp_path / "empty"), "-o", str(tmp_path / "out")],
            "output is a file": ["site", str(GALLERY / "mlp.ncd"), "-o",
                                 str(tmp_path / "file")]}[case]
    assert main(argv) == 2
    assert re.search(r"ncd: error: .*(no such file|no \.ncd files|not a folder)",
                     capsys.readouterr().err)


def test_the_site_in_a_browser(site: Path, tmp_path: Path) -> None:
    """The index and a model page are drawn (not blank) without a console message."""
    chromium = browser.require_chromium()
    for page in ("index.html", "transformer.html"):
        shot = browser.screenshot(chromium, (site / page).as_uri(),
                                  tmp_path / page.replace(".html", ".png"))
        assert shot.console == [], shot.log
        assert not browser.is_blank(shot.png), page


def test_the_console_check_catches_errors(tmp_path: Path) -> None:
    """The checks above can fail: a script error is caught, and a blank page is blank."""
    chromium = browser.require_chromium()
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><script>console.log('hello');</script>"
                    "<script>notDefined();</script></body></html>", encoding="utf-8")
    shot = browser.screenshot(chromium, page.as_uri(), tmp_path / "bad.png", height=300)
    assert any("Uncaught ReferenceError: notDefined is not defined" in m for m in shot.console)
    assert any('"hello"' in m for m in shot.console), shot.console
    assert browser.is_blank(shot.png)  # nothing drawn on it
