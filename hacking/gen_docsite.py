"""Write docs/docsite/rst/<page>.rst from docs/<page>.md, for the antsibull-docs site.

    python hacking/gen_docsite.py           write the pages
    python hacking/gen_docsite.py --check   fail if a page is out of date (make docs-lint)

docs/*.md stay the source (GitHub shows them, README links them); antsibull-docs takes collection
extra docs only as reStructuredText under docs/docsite/rst, named in docs/docsite/extra-docs.yml.
Each page gets the label ansible_collections.gpuops.sharing.docsite.<page>; links between the
pages become references to those labels, links to other files of the repository become links to
them on GitHub (galaxy.yml's repository). Covers the Markdown the docs use: headings, paragraphs,
lists, tables, code blocks, inline code, emphasis and links.
"""

from __future__ import annotations

import os
import re
import sys

import yaml
from markdown_it import MarkdownIt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
OUT = os.path.join(DOCS, "docsite", "rst")
LABEL = "ansible_collections.gpuops.sharing.docsite."
HEADINGS = {"h1": "=", "h2": "-", "h3": "^", "h4": '"'}
MARK = "\x00"
BEFORE_OK = " \t\n'\"([{<-/:" + MARK
AFTER_OK = " \t\n'\")]}>-/:.,;!?\\" + MARK


def repository() -> str:
    with open(os.path.join(ROOT, "galaxy.yml")) as fh:
        return yaml.safe_load(fh)["repository"].rstrip("/")


def pages() -> list[str]:
    return sorted(n[:-3] for n in os.listdir(DOCS) if n.endswith(".md"))


def escape(text: str) -> str:
    text = text.replace("\\", "\\\\")
    for ch in "*`|":
        text = text.replace(ch, "\\" + ch)
    return re.sub(r"(?<=\w)_(?=\W|$)", r"\\_", text)


def separate(text: str) -> str:
    """Inline markup is wrapped in MARK; rST wants it apart from words: an escaped space where needed."""
    out = []
    for i, ch in enumerate(text):
        if ch != MARK:
            out.append(ch)
            continue
        prev = out[-1] if out else " "
        nxt = text[i + 1] if i + 1 < len(text) else " "
        opening = text.count(MARK, 0, i) % 2 == 0
        if (opening and prev not in BEFORE_OK) or (not opening and nxt not in AFTER_OK):
            out.append("\\ ")
    return "".join(out)


class Converter:
    def __init__(self, page: str, known: list[str], repo: str):
        self.page, self.known, self.repo = page, known, repo

    def target(self, href: str) -> tuple[str, str]:
        """('ref', label) for another page, ('url', address) otherwise."""
        if re.match(r"^[a-z]+:", href):
            return "url", href
        path = href.partition("#")[0]
        if not path:
            return "ref", LABEL + self.page
        full = os.path.normpath(os.path.join("docs", path))
        stem = os.path.basename(full)[:-3] if full.endswith(".md") else None
        if stem and os.path.dirname(full) == "docs" and stem in self.known:
            return "ref", LABEL + stem
        kind = "tree" if not os.path.isfile(os.path.join(ROOT, full)) else "blob"
        return "url", f"{self.repo}/{kind}/main/{full}"

    def inline(self, tokens) -> str:
        out: list[str] = []
        link: dict | None = None
        nested = 0   # inside ** or *: rST nests no markup, so code there is plain text
        for tok in tokens:
            if link is not None and tok.type != "link_close":
                link["words"].append(tok.content if tok.type in ("text", "code_inline") else "")
                continue
            if tok.type == "text":
                out.append(escape(tok.content))
            elif tok.type == "code_inline":
                out.append(escape(tok.content) if nested else f"{MARK}``{tok.content}``{MARK}")
            elif tok.type in ("softbreak", "hardbreak"):
                out.append(" ")
            elif tok.type in ("strong_open", "strong_close", "em_open", "em_close"):
                star = "**" if tok.type.startswith("strong") else "*"
                opening = tok.type.endswith("_open")
                nested += 1 if opening else -1
                if (opening and nested == 1) or (not opening and nested == 0):
                    out.append(MARK + star if opening else star + MARK)
            elif tok.type == "link_open":
                link = {"href": str(tok.attrs.get("href", "")), "words": [], "auto": tok.markup == "autolink"}
            elif tok.type == "link_close":
                text = "".join(link["words"]).strip()
                kind, where = self.target(link["href"])
                auto = link["auto"]
                link = None
                if auto:
                    out.append(f"{MARK}{where}{MARK}")
                elif kind == "ref":
                    out.append(f"{MARK}:ref:`{text} <{where}>`{MARK}")
                else:
                    out.append(f"{MARK}`{text} <{where}>`__{MARK}")
            elif tok.type == "html_inline":
                continue
            else:
                out.append(escape(tok.content))
        return separate("".join(out)).strip()

    def convert(self, text: str) -> str:
        md = MarkdownIt("commonmark").enable("table")
        tokens = md.parse(text)
        lines: list[str] = [f".. _{LABEL}{self.page}:", ""]
        indent = ""
        bullets: list[str] = []
        pending_bullet: str | None = None
        table: list[list[str]] | None = None
        row: list[str] | None = None
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            t = tok.type
            if t == "heading_open":
                title = self.inline(tokens[i + 1].children)
                lines += [title, HEADINGS[tok.tag] * len(title), ""]
                i += 3
                continue
            if t == "paragraph_open":
                body = self.inline(tokens[i + 1].children)
                if table is None:
                    if pending_bullet is not None:
                        lines.append(indent[:-len(pending_bullet)] + pending_bullet + body)
                        pending_bullet = None
                    else:
                        lines.append(indent + body)
                    lines.append("")
                i += 3
                continue
            if t in ("bullet_list_open", "ordered_list_open"):
                bullets.append("- " if t == "bullet_list_open" else "#. ")
                if pending_bullet is not None:
                    lines.append(indent[:-len(pending_bullet)] + pending_bullet.rstrip())
                    lines.append("")
                    pending_bullet = None
            elif t in ("bullet_list_close", "ordered_list_close"):
                bullets.pop()
                lines.append("")
            elif t == "list_item_open":
                pending_bullet = bullets[-1]
                indent += " " * len(pending_bullet)
            elif t == "list_item_close":
                indent = indent[:-len(bullets[-1])]
                if lines and lines[-1] == "" and len(lines) > 1 and lines[-2].startswith(indent + " "):
                    pass
            elif t in ("fence", "code_block"):
                lang = (tok.info or "").strip().split(" ")[0] or "text"
                if pending_bullet is not None:
                    lines.append(indent[:-len(pending_bullet)] + pending_bullet.rstrip())
                    lines.append("")
                    pending_bullet = None
                lines += [indent + f".. code-block:: {lang}", ""]
                lines += [(indent + "  " + ln).rstrip() for ln in tok.content.rstrip("\n").split("\n")]
                lines.append("")
            elif t == "table_open":
                table = []
            elif t == "tr_open":
                row = []
            elif t in ("th_open", "td_open"):
                row.append(self.inline(tokens[i + 1].children) if tokens[i + 1].type == "inline" else "")
            elif t == "tr_close":
                table.append(row)
            elif t == "table_close":
                width = max(len(r) for r in table)
                lines += [indent + ".. list-table::", indent + "  :header-rows: 1", ""]
                for r in table:
                    cells = r + [""] * (width - len(r))
                    lines.append(indent + "  * - " + (cells[0] or "\\ "))
                    lines += [indent + "    - " + (c or "\\ ") for c in cells[1:]]
                lines.append("")
                table = None
            elif t == "blockquote_open":
                indent += "    "
            elif t == "blockquote_close":
                indent = indent[:-4]
            elif t == "hr":
                lines += ["----", ""]
            i += 1
        text = "\n".join(lines)
        text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
        return text


def main(check: bool) -> int:
    os.makedirs(OUT, exist_ok=True)
    repo, known, stale = repository(), pages(), []
    wanted = {f"{p}.rst" for p in known}
    for page in known:
        with open(os.path.join(DOCS, page + ".md")) as fh:
            rst = Converter(page, known, repo).convert(fh.read())
        rst = (f"..\n  Generated by hacking/gen_docsite.py from docs/{page}.md: edit that file, then run\n"
               "  python hacking/gen_docsite.py\n\n") + rst
        path = os.path.join(OUT, page + ".rst")
        old = None
        if os.path.exists(path):
            with open(path) as fh:
                old = fh.read()
        if old != rst:
            stale.append(path)
            if not check:
                with open(path, "w") as fh:
                    fh.write(rst)
    extra = [n for n in os.listdir(OUT) if n.endswith(".rst") and n not in wanted]
    for name in extra:
        stale.append(os.path.join(OUT, name))
        if not check:
            os.unlink(os.path.join(OUT, name))
    if check and stale:
        print("out of date (run python hacking/gen_docsite.py): " + ", ".join(os.path.relpath(p, ROOT) for p in stale),
              file=sys.stderr)
        return 1
    print(f"docs/docsite/rst: {len(known)} pages" + ("" if check else f", {len(stale)} written"))
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
