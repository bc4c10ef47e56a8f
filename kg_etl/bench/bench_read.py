"""Reader + chunker speed against a bare pypdf loop, and word recall against poppler's pdftotext.

Run: ``python -m kg_etl.bench.bench_read [CORPUS_DIR] [--rounds N]``; or ``run(corpus_dir)`` for the figures.

Speed: per file, ABBA order (bare, ours, ours, bare) per round, so drift in machine load hits both sides
alike; each side's time for a file is its fastest run, the least noisy estimate. Only files that both
sides read are timed. Recall: the share of pdftotext's words (NFKC, case-folded, ``\\w+``, counted with
multiplicity) that the document text also has; bare pypdf's recall is shown beside it. Words hyphenated
at a line end are joined in pdftotext's text first, as the reader joins them ("govern-\\nment" would
otherwise count as two words the reader lacks).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pypdf import PdfReader

from kg_etl.bench import CORPUS
from kg_etl.chunk import chunk_pages
from kg_etl.errors import ReadError
from kg_etl.models import Page, document_text
from kg_etl.read import open_pdf, password_for
from kg_etl.text import normalise

__all__ = ["main", "run"]

DEFAULT_CORPUS = CORPUS
# The corpus's encrypted files with published passwords (see its MANIFEST.tsv).
CORPUS_PASSWORDS = {"NASTY_encrypted_known_password.pdf": "openpassword", "NASTY_encrypted_aes256_r6.pdf": "password"}
_WORD = re.compile(r"\w+")


def run(
    corpus_dir: Path,
    *,
    rounds: int = 1,
    passwords: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Time and compare every PDF in ``corpus_dir``; return per-file and overall figures."""
    passwords = CORPUS_PASSWORDS if passwords is None else passwords
    files = []
    for path in sorted(Path(corpus_dir).glob("*.pdf")):
        files.append(_measure(path, rounds, password_for(path, passwords), timeout_s))
    return {"files": files, "overall": _overall(files), "rounds": rounds}


def _measure(path: Path, rounds: int, password: str | None, timeout_s: float) -> dict[str, Any]:
    bare_times: list[float] = []
    ours_times: list[float] = []
    row: dict[str, Any] = {"file": path.name}
    try:
        for _ in range(rounds):
            for side in ("bare", "ours", "ours", "bare"):
                if side == "bare":
                    seconds, bare_text, pages = _timed(lambda: _bare(path, password))
                    bare_times.append(seconds)
                else:
                    seconds, (text, n_chunks), _ = _timed(lambda: _ours(path, password, timeout_s))
                    ours_times.append(seconds)
    except (ReadError, _BareFailed) as e:
        row["error"] = str(e.reason if isinstance(e, ReadError) else e)
        return row
    row |= {"pages": pages, "chunks": n_chunks, "bare_s": min(bare_times), "ours_s": min(ours_times)}
    reference = _pdftotext(path, password)
    if reference is not None:
        row["recall"] = _recall(text, reference)
        row["bare_recall"] = _recall(bare_text, reference)
    return row


def _timed(work: Callable[[], tuple[Any, int]]) -> tuple[float, Any, int]:
    started = time.perf_counter()
    result, pages = work()
    return time.perf_counter() - started, result, pages


class _BareFailed(Exception):
    """pypdf alone cannot open the file."""


def _bare(path: Path, password: str | None) -> tuple[str, int]:
    """The baseline: what a script with pypdf alone would do."""
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            reader.decrypt(password or "")
        pages = reader.pages
        texts = []
        for page in pages:
            try:
                texts.append(page.extract_text())
            except Exception:  # the baseline skips bad pages too
                texts.append("")
    except Exception as e:
        raise _BareFailed(f"{type(e).__name__}: {e}") from e
    return "\n\n".join(texts), len(texts)


def _ours(path: Path, password: str | None, timeout_s: float) -> tuple[tuple[str, int], int]:
    """The reader and chunker as the pipeline runs them, keeping the pages (as the baseline keeps its texts)."""
    doc = open_pdf(path, password=password, timeout_s=timeout_s)
    pages: list[Page] = []

    def kept() -> Iterator[Page]:
        for page in doc.pages():
            pages.append(page)
            yield page

    n_chunks = sum(1 for _ in chunk_pages(kept(), doc.meta.id))
    return (document_text(pages), n_chunks), doc.meta.n_pages


def _pdftotext(path: Path, password: str | None) -> str | None:
    if shutil.which("pdftotext") is None:
        return None
    args = ["pdftotext", "-q", "-enc", "UTF-8", *(["-upw", password] if password else []), str(path), "-"]
    done = subprocess.run(args, capture_output=True, timeout=120, check=False)
    return normalise(done.stdout.decode("utf-8", "replace")) if done.returncode == 0 else None


def _words(text: str) -> Counter[str]:
    return Counter(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def _recall(text: str, reference: str) -> float | None:
    ref = _words(reference)
    total = sum(ref.values())
    if not total:
        return None
    ours = _words(text)
    return sum(min(n, ours[w]) for w, n in ref.items()) / total


def _overall(files: list[dict[str, Any]]) -> dict[str, Any]:
    timed = [f for f in files if "bare_s" in f]
    pages = sum(f["pages"] for f in timed)
    bare_s = sum(f["bare_s"] for f in timed)
    ours_s = sum(f["ours_s"] for f in timed)
    recalls = [f["recall"] for f in timed if f.get("recall") is not None]
    bare_recalls = [f["bare_recall"] for f in timed if f.get("bare_recall") is not None]
    return {
        "files_timed": len(timed),
        "pages": pages,
        "bare_pages_per_s": pages / bare_s if bare_s else None,
        "ours_pages_per_s": pages / ours_s if ours_s else None,
        "overhead_pct": 100 * (ours_s / bare_s - 1) if bare_s else None,
        "mean_recall": sum(recalls) / len(recalls) if recalls else None,
        "mean_bare_recall": sum(bare_recalls) / len(bare_recalls) if bare_recalls else None,
        "pdftotext": shutil.which("pdftotext") is not None,
    }


def _print(result: dict[str, Any]) -> None:
    print(f"{'file':42} {'pages':>5} {'chunks':>6} {'bare s':>7} {'ours s':>7} {'ovh %':>6} {'recall':>7} {'bare':>7}")
    for f in result["files"]:
        if "error" in f:
            print(f"{f['file']:42} {'':>5} {'':>6} error: {f['error'][:70]}")
            continue
        overhead = 100 * (f["ours_s"] / f["bare_s"] - 1) if f["bare_s"] else 0.0
        print(
            f"{f['file']:42} {f['pages']:5d} {f['chunks']:6d} {f['bare_s']:7.2f} {f['ours_s']:7.2f} {overhead:6.1f} "
            f"{_pct(f.get('recall')):>7} {_pct(f.get('bare_recall')):>7}"
        )
    o = result["overall"]
    print(
        f"\noverall: {o['files_timed']} files, {o['pages']} pages; bare pypdf {o['bare_pages_per_s']:.1f} pages/s, "
        f"reader+chunker {o['ours_pages_per_s']:.1f} pages/s, overhead {o['overhead_pct']:+.1f}% "
        f"(goal <= 15%); mean word recall vs pdftotext {_pct(o['mean_recall'])} (bare pypdf "
        f"{_pct(o['mean_bare_recall'])})"
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds per file (each runs both sides twice)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # pypdf's warnings about damaged files are expected here
    _print(run(args.corpus, rounds=args.rounds))


if __name__ == "__main__":
    main()
