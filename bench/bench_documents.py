"""Answers from the user's documents: retrieval, rerank, and the real model through the real turn.

The set is ``bench/data/docqa.json``: public texts that ship with Debian (the licences under
/usr/share/common-licenses), 43 questions with exact answers and 10 the texts cannot answer,
written from the texts and kept out of tuning (the rerank was tuned on ``docqa_tuning.json``,
over other texts). The texts are copied under their own names (``GPL-3``, ``Apache-2.0``: no
extension, or a version number for one) to a temporary folder and ingested with
:func:`llmos.memory.ingest.ingest` into a fresh store with the default document embedder.

- ``documents_ingest_chunks_per_s``: chunks stored per second by that ingest.
- ``documents_passage_recall_at_5``: the share of questions whose answer (the first accepted
  string) is in one of the passages :meth:`DiskPager.passages` gives (at most 5, reranked,
  neighbours merged); ``..._hybrid``: in the first 5 chunks of the hybrid search alone, as before.
- ``documents_retrieval_ms_p50`` / ``_p95``: the time of :meth:`DiskPager.passages` (hybrid
  search of 20 candidates, their vectors, the rerank, the merge) per question.
- ``documents_answers_hold_fact``: each question asked in a new process of a kernel on the
  shared model with a :class:`DiskPager` on that store; the share of answers holding an accepted
  string (case and whitespace ignored, on word boundaries); ``documents_answers_cite``: the share
  of answers naming the passage's file.
- ``documents_unanswerable_said``: the share of the 10 unanswerable questions answered with
  "not in your documents" (or "... the documents").

Run alone: ``.venv/bin/python bench/run.py --only documents`` (``--quick``: every third question,
all six texts, and every other unanswerable one through the model; retrieval always on the whole
set). On two shared cores a question through the model takes one to three minutes.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import BenchContext

FIGURES = (
    "documents_ingest_chunks_per_s",
    "documents_passage_recall_at_5",
    "documents_passage_recall_at_5_hybrid",
    "documents_retrieval_ms_p50",
    "documents_retrieval_ms_p95",
    "documents_answers_hold_fact",
    "documents_answers_cite",
    "documents_unanswerable_said",
)
DATA = Path(__file__).resolve().parent / "data" / "docqa.json"
NOT_THERE = re.compile(r"not (?:in|found in|contained in|mentioned in) (?:your|the) documents")


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def holds(answer: str, accepted: list[str]) -> bool:
    """Does ``answer`` say one of the accepted strings (on word boundaries)?"""
    said = norm(answer)
    return any(re.search(rf"(?<!\w){re.escape(norm(a))}(?!\w)", said) for a in accepted)


def load(path: Path = DATA) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def copy_texts(data: dict[str, Any], folder: Path) -> list[Path]:
    """The set's texts under their own names in ``folder`` (a missing one is an error)."""
    paths = []
    for name, source in data["texts"].items():
        if not Path(source).is_file():
            raise FileNotFoundError(f"docqa: the text {source} is not on this machine")
        paths.append(Path(shutil.copy(source, folder / name)))
    return paths


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(ctx: "BenchContext") -> list[dict[str, Any]]:
    from llmos.memory.disk import DiskStore
    from llmos.memory.ingest import ingest
    from llmos.memory.pager import DiskPager

    data = load()
    questions, unanswerable = data["questions"], data["unanswerable"]
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="llmos-bench-docqa-") as tmp:
        root = Path(tmp)
        (root / "texts").mkdir()
        paths = copy_texts(data, root / "texts")
        store_path = root / "store"
        store = DiskStore(store_path)
        report = ingest(paths, store)
        figures.append({"name": "documents_ingest_chunks_per_s", "value": report.chunks / report.seconds,
                        "unit": "chunks/s", "goal": ">= 200",
                        "detail": f"{report.chunks} chunks of {len(paths)} texts in {report.seconds:.2f} s"})
        store.close()
        pager = DiskPager(store_path)
        pager.passages("warm up the embedders and the BM25 index")
        found = hybrid = 0
        times: list[float] = []
        misses = []
        for item in questions:
            answer = norm(item["answer"][0])
            started = time.perf_counter()
            passages = pager.passages(item["q"])
            times.append((time.perf_counter() - started) * 1000)
            hits = pager._disk().search(item["q"], k=5, collection="documents")
            hybrid += any(answer in norm(h.text) for h in hits)
            if any(answer in norm(p.text) for p in passages):
                found += 1
            else:
                misses.append(item["q"][:50])
        n = len(questions)
        figures += [
            {"name": "documents_passage_recall_at_5", "value": found / n, "unit": "share", "goal": ">= 0.95",
             "detail": f"{found}/{n} (reranked, merged); missed: {'; '.join(misses) or 'none'}"},
            {"name": "documents_passage_recall_at_5_hybrid", "value": hybrid / n, "unit": "share", "goal": None,
             "detail": f"{hybrid}/{n} in the hybrid search's first 5 chunks"},
            {"name": "documents_retrieval_ms_p50", "value": statistics.median(times), "unit": "ms", "goal": None},
            {"name": "documents_retrieval_ms_p95", "value": _percentile(times, 0.95), "unit": "ms",
             "goal": "<= 150", "detail": f"max {max(times):.1f} ms over {n} questions"},
        ]
        if ctx.wants("documents_answers") or ctx.wants("documents_unanswerable"):
            figures += _answers(ctx, pager, questions, unanswerable, data)
    return figures


def _answers(ctx: "BenchContext", pager: Any, questions: list[dict[str, Any]], unanswerable: list[dict[str, Any]],
             data: dict[str, Any]) -> list[dict[str, Any]]:
    from llmos.kernel.loop import Kernel

    if ctx.quick:
        questions, unanswerable = questions[::3], unanswerable[::2]
    kernel = Kernel(ctx.backend(), ctx.registry(), pager=pager).start()
    right = cited = said = 0
    wrong: list[str] = []
    guessed: list[str] = []
    seconds: list[float] = []

    def ask(text: str) -> str:
        pid = kernel.spawn("docqa")
        started = time.monotonic()
        try:
            return kernel.submit(pid, text).result(900).answer
        finally:
            seconds.append(time.monotonic() - started)
            kernel.kill(pid)
            ctx.backend().release(pid)

    try:
        kernel.wait_ready(1800)  # the load includes the decision calibration: slow on a busy machine
        for number, item in enumerate(questions, 1):
            answer = ask(item["q"])
            ok = holds(answer, item["answer"])
            right += ok
            cited += item["file"].lower() in answer.lower()
            if not ok:
                wrong.append(f"{item['q'][:40]}... -> {answer[:60]!r}")
            ctx.log(f"docqa {number}/{len(questions)}: {'ok' if ok else 'WRONG'}: {answer[:100]!r}")
        for item in unanswerable:
            answer = ask(item["q"])
            ok = bool(NOT_THERE.search(norm(answer)))
            said += ok
            if not ok:
                guessed.append(f"{item['q'][:40]}... -> {answer[:60]!r}")
            ctx.log(f"docqa unanswerable: {'said so' if ok else 'GUESSED'}: {answer[:100]!r}")
    finally:
        kernel.shutdown(close_backend=False)
    n, m = len(questions), len(unanswerable)
    model = ctx.model_path.name
    return [
        {"name": "documents_answers_hold_fact", "value": right / n, "unit": "share", "goal": ">= 0.85",
         "detail": f"{right}/{n} with {model}, median {statistics.median(seconds):.1f} s a question; "
                   f"wrong: {'; '.join(wrong[:8]) or 'none'}"},
        {"name": "documents_answers_cite", "value": cited / n, "unit": "share", "goal": None,
         "detail": f"{cited}/{n} answers name the file"},
        {"name": "documents_unanswerable_said", "value": said / m, "unit": "share", "goal": ">= 0.80",
         "detail": f"{said}/{m}; guessed: {'; '.join(guessed) or 'none'}"},
    ]
