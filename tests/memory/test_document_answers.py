"""Answers from the user's documents: the best few passages (reranked, neighbours merged, within a
budget), cited as [file, section], and "not in your documents" when they do not hold the answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.devices import Untrusted
from llmos.kernel.loop import Kernel
from llmos.kernel.paging import RECALL_CALL, RECALL_HEADER, grounded
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.turn import DOCUMENTS_NOTE, UNGROUNDED_NOTE, TurnOptions
from llmos.memory.disk import DiskStore, Hit
from llmos.memory.ingest import ingest
from llmos.memory.pager import DiskPager, passage
from llmos.memory.rerank import Passage, about_documents, content_words, fit, merge, rerank, select

# a file without an extension, with sections and numbered clauses, as a user keeps one
LEASE = """Tenancy agreement
=================

1. Rent
-------

The rent is 1,150 euros a month, paid on the first working day of each month
into the landlord's account at Nordbank.

2. Pets
-------

Tenants may keep one cat or one small dog. Birds and fish need no permission.
Any other animal needs the landlord's written consent first.

3. Notice
---------

Either party may end the tenancy with three months' notice in writing. The
landlord must give the tenant at least 24 hours' notice before visiting the flat.
"""


def _hit(id_: str, text: str, source: str = "/d/lease", section: str = "S", chunk: int = 0,
         score: float = 0.03) -> Hit:
    return Hit(id_, text, score, {"source": source, "section": section, "chunk": chunk}, "documents", 0.5)


def _passage(chunk: int, score: float, section: str = "Terms > Returns", source: str = "/d/terms.md") -> Passage:
    return Passage(source, section, (chunk,), f"{section}\n\nchunk {chunk} text", score, ids=(f"id{chunk}",))


# --- fast: the rerank, the merge and the budget ----------------------------------------------


def test_content_words_leave_out_how_a_question_is_asked():
    assert content_words("What does the lease say about pets?") == ["lease", "pet"]


def test_the_chunk_holding_the_questions_rare_word_ranks_first_when_vectors_tie():
    hits = [_hit("a", "Tenants may keep a cat in the flat."),
            _hit("b", "The tenant keeps the flat clean."),
            _hit("c", "The tenant pays for the flat's heating.")]
    vectors = np.ones((3, 4), dtype=np.float32) / 2.0  # the same cosine for all three
    ranked = rerank("May the tenant keep a cat in the flat?", hits, vectors, np.ones(4, dtype=np.float32) / 2.0)
    assert [p.ids[0] for p in ranked][0] == "a"
    assert ranked[0].lexical == 1.0 > ranked[1].lexical  # "cat", the rarest word, is only in "a"


def test_the_file_name_counts_as_words_of_the_passage():
    hits = [_hit("a", "Either party may end it.", source="/d/lease"),
            _hit("b", "Either party may end it.", source="/d/contract")]
    vectors = np.ones((2, 4), dtype=np.float32) / 2.0
    ranked = rerank("How does the lease end?", hits, vectors, np.ones(4, dtype=np.float32) / 2.0)
    assert ranked[0].ids == ("a",)


def test_neighbouring_chunks_of_one_section_are_merged_with_the_heading_said_once():
    merged = merge([_passage(4, 0.9), _passage(3, 0.5), _passage(7, 0.8), _passage(5, 0.4, section="Terms > Fees")])
    assert [p.chunks for p in merged] == [(3, 4), (7,), (5,)]  # best first; 5 is another section
    assert merged[0].text == "Terms > Returns\n\nchunk 3 text\n\nchunk 4 text"
    assert merged[0].score == 0.9 and merged[0].ids == ("id3", "id4")
    assert passage(merged[0]) == "From the file terms.md [Terms > Returns]: chunk 3 text chunk 4 text"


def test_chunks_of_different_files_are_never_merged():
    merged = merge([_passage(1, 0.9), _passage(2, 0.8, source="/d/other.md")])
    assert len(merged) == 2


def test_select_keeps_the_best_five_within_reach_of_the_best():
    ranked = [_passage(i * 2, s) for i, s in enumerate([2.0, 1.9, 1.6, 1.5, 1.45, 1.44, 1.0])]
    chosen = select(ranked)
    assert [p.chunks[0] for p in chosen] == [0, 2, 4, 6, 8]  # the sixth is past five, the last too weak


def test_fit_keeps_the_best_texts_within_the_budget_and_passes_over_one_too_long():
    assert fit(["a" * 50, "b" * 80, "c" * 30], 100) == [(0, "a" * 50), (2, "c" * 30)]
    only = fit(["word " * 40], 23)
    assert only[0][0] == 0 and only[0][1].endswith("...") and len(only[0][1]) <= 23
    assert fit([], 100) == []


def test_a_question_shares_no_content_word_with_the_passages_is_not_about_the_documents():
    assert not about_documents([Passage("/d/lease", "", (0,), "text", 1.0, 0.6, 0.0)])
    assert about_documents([Passage("/d/lease", "", (0,), "text", 1.0, 0.6, 0.5)])


def test_an_answer_is_grounded_when_the_passages_hold_the_words_it_adds():
    question = "How much is the rent a month, according to my lease?"
    assert grounded("The rent is 1,150 euros a month [lease, 1. Rent].", question, [LEASE])
    assert not grounded("The rent is 1,400 dollars, due every Friday.", question, [LEASE])
    assert grounded("That is not in your documents.", question, [LEASE])
    assert grounded("The rent.", question, [LEASE])  # nothing added to the question: nothing to check


# --- fast, on a real store: the pager and the page-in --------------------------------------


@pytest.fixture()
def lease_store(tmp_path: Path) -> Path:
    (tmp_path / "lease").write_text(LEASE)  # no extension
    store = tmp_path / "store"
    with DiskStore(store) as disk:
        assert ingest([tmp_path / "lease"], disk).chunks >= 3
    return store


def test_the_pager_pages_in_the_passage_that_holds_the_answer_with_file_and_section(lease_store):
    texts = DiskPager(lease_store).page_in("c1", "How much notice must the landlord give before visiting?", 3200)
    passages = [t.value for t in texts if isinstance(t, Untrusted)]
    assert passages and passages[0].startswith("From the file lease [Tenancy agreement > 3. Notice]:")
    assert "24 hours" in passages[0]
    assert sum(len(p) for p in passages) <= 3200


def test_a_greeting_brings_no_document_passage(lease_store):
    assert DiskPager(lease_store).page_in("c1", "hello there, how are you today?", 3200) == []


def test_passages_come_with_the_note_to_cite_them_and_say_when_they_do_not_hold_the_answer(lease_store):
    backend = ScriptedBackend(["ANSWER: Three months' notice [lease, Tenancy agreement > 3. Notice]."])
    kernel = Kernel(backend, DeviceRegistry(), pager=DiskPager(lease_store)).start()
    try:
        pid = kernel.spawn("chat")
        kernel.submit(pid, "How much notice ends the tenancy?").result(30)
    finally:
        kernel.shutdown()
    prompt = backend.history[-1]
    note = prompt.index(DOCUMENTS_NOTE)
    block = prompt.index(f'<tool_response call="{RECALL_CALL}" trust="untrusted">')
    assert prompt.rfind(RECALL_HEADER, 0, note) != -1 and note < block  # the OS's own words, before the data
    assert "three months" in prompt[block:]



class _Recording(ScriptedBackend):
    """A scripted backend that keeps the prompts each decision was scored on."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(replies)
        self.scored: list[str] = []

    def score(self, pid: int, prompt: str, continuations: list[str]) -> list[float]:
        self.scored.append(prompt)
        return super().score(pid, prompt, continuations)


def test_a_document_question_is_decided_on_the_request_and_answered_with_the_passages_in_view(lease_store):
    backend = _Recording(["ANSWER: 1,150 euros a month [lease, Tenancy agreement > 1. Rent]."])
    kernel = Kernel(backend, DeviceRegistry.from_entry_points(), pager=DiskPager(lease_store)).start()
    try:
        pid = kernel.spawn("chat")
        question = "How much is the rent a month, according to my lease?"
        result = kernel.submit(pid, question).result(30)
    finally:
        kernel.shutdown()
    assert "1,150" in result.answer and not result.syscalls
    decisions = [p for p in backend.scored if question in p]
    assert decisions and all("Nordbank" not in p and DOCUMENTS_NOTE not in p for p in decisions)
    assert "Nordbank" in backend.history[-1]  # the answer was written with the passage in view


def test_a_document_question_that_wants_a_device_still_calls_it_with_the_passages_in_view(lease_store):
    backend = _Recording(['CALL calculator.evaluate {"expression": "1150*12"}', "ANSWER: 13,800 euros a year."])
    kernel = Kernel(backend, DeviceRegistry.from_entry_points(), pager=DiskPager(lease_store)).start()
    try:
        pid = kernel.spawn("chat")
        result = kernel.submit(pid, "Multiply the monthly rent in my lease by 12.").result(30)
    finally:
        kernel.shutdown()
    assert [c["result"] for c in result.syscalls] == ["13800"]
    arguments = next(p for p in backend.history if p.rstrip().endswith("CALL calculator.evaluate"))
    assert "1,150 euros" in arguments


def test_after_a_failed_call_a_document_question_is_answered_from_the_passages_without_the_error_page(lease_store):
    backend = _Recording(['CALL calculator.evaluate {"expression": "1,150 euros a month"}',
                          "ANSWER: 1,150 euros a month [lease, Tenancy agreement > 1. Rent]."])
    kernel = Kernel(backend, DeviceRegistry.from_entry_points(), pager=DiskPager(lease_store),
                    options=TurnOptions(retry_failed_calls=False)).start()
    try:
        pid = kernel.spawn("chat")
        result = kernel.submit(pid, "How much is the rent a month, according to my lease?").result(30)
    finally:
        kernel.shutdown()
    assert [c["ok"] for c in result.syscalls] == [False]
    answer_prompt = backend.history[-1]
    assert "Nordbank" in answer_prompt and "Error:" not in answer_prompt
    assert result.answer.startswith("1,150 euros a month")

def _turn(store: Path, reply: str, question: str) -> str:
    kernel = Kernel(ScriptedBackend([reply]), DeviceRegistry(), pager=DiskPager(store)).start()
    try:
        pid = kernel.spawn("chat")
        return kernel.submit(pid, question).result(30).answer
    finally:
        kernel.shutdown()


def test_an_answer_the_passages_do_not_bear_out_is_marked_not_in_the_documents(lease_store):
    question = "What colour must the front door be painted, according to the lease?"
    guess = "The front door must be painted bright orange every spring."
    assert _turn(lease_store, f"ANSWER: {guess}", question) == guess + UNGROUNDED_NOTE
    assert "not in your documents" in UNGROUNDED_NOTE.lower()
    right = "Three months' notice in writing [lease, Tenancy agreement > 3. Notice]."
    assert _turn(lease_store, f"ANSWER: {right}", "How much notice ends the tenancy?") == right


def test_an_answer_from_the_passages_that_names_no_file_gets_the_citation_of_its_passage(lease_store):
    answer = _turn(lease_store, "ANSWER: The landlord must give 24 hours' notice.",
                   "How much notice must the landlord give before visiting the flat?")
    assert answer == "The landlord must give 24 hours' notice. [lease, Tenancy agreement > 3. Notice]"


def test_an_answer_to_a_question_not_about_the_documents_is_left_alone(lease_store):
    assert _turn(lease_store, "ANSWER: Bright orange paint, twice a year.", "hello, how are you?") == \
        "Bright orange paint, twice a year."


# --- the real model ----------------------------------------------------------------------------


def _ask(real_backend, store: Path, question: str) -> str:
    kernel = Kernel(real_backend, DeviceRegistry.from_entry_points(), pager=DiskPager(store)).start()
    try:
        kernel.wait_ready(600)
        pid = kernel.spawn("chat")
        answer = kernel.submit(pid, question).result(900).answer
        real_backend.release(pid)
        return answer
    finally:
        kernel.shutdown(close_backend=False)


@pytest.mark.model
@pytest.mark.timeout(1800)  # the load includes the decision calibration: slow on a busy machine
def test_real_model_answers_from_a_file_without_an_extension_and_cites_it(real_backend, lease_store):
    answer = _ask(real_backend, lease_store, "How much is the rent a month, according to my lease?")
    assert "1,150" in answer or "1150" in answer, answer
    assert "lease" in answer.lower(), answer  # the citation names the file


@pytest.mark.model
@pytest.mark.timeout(1800)
def test_real_model_says_a_fact_is_not_in_the_documents(real_backend, lease_store):
    answer = _ask(real_backend, lease_store, "What colour must the tenant paint the front door, according to my lease?")
    assert "not in your documents" in answer.lower(), answer
