"""kg-etl eval: the WebNLG scorer on cases worked out by hand, the gold set's own soundness, and the commands.

The scorer's expected values follow the WebNLG 2020 text-to-RDF definitions (README of shared/benchmarks);
the real models' scores are measured by the real-model tier and the README's table, not asserted here.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from kg_etl.cli import cli
from kg_etl.defaults import DEFAULT_CATEGORIES
from kg_etl.errors import ConfigError
from kg_etl.eval.gold import GoldDocument, _norm, _verbatim, default_gold_dir, load_gold, score_gold
from kg_etl.eval.session import EvalItem, Outcomes
from kg_etl.eval.triples import normalise, score_pair, score_triples
from kg_etl.eval.webnlg import WebNLGEntry, candidate_triples, read_webnlg, write_candidates
from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.categories import categories_extractor
from kg_etl.extract.facts import Fact, Facts, Triple
from kg_etl.extract.keywords import Keyword, Keywords
from kg_etl.extract.qa import QAPair, QAPairs
from kg_etl.extract.taxonomy import Taxonomy, TopicNode, TopicPath
from kg_etl.extract.validate import Judgement, Validations, content_words, judge, words

# -- the triple scorer ---------------------------------------------------------------------------------------


def _f1(reference: str, candidate: str) -> dict[str, float]:
    scores = score_triples([[tuple(reference.split(" | "))]], [[tuple(candidate.split(" | "))]])  # type: ignore[list-item]
    return {name: s.f1 for name, s in scores.items()}


def test_normalisation_splits_camel_case_and_drops_the_objects_qualifier() -> None:
    assert normalise("Turn_Me_On_(album) | followedBy | Take_It_Off_(album)") == [
        "turn me on (album)", "followed by", "take it off",
    ]  # fmt: skip


def test_identical_triples_score_one_and_word_forms_that_normalise_alike_match() -> None:
    assert set(
        _f1("Alan_Shepard | birthPlace | New_Hampshire", "Alan_Shepard | birthPlace | New_Hampshire").values()
    ) == {1.0}
    alike = _f1("Alan_Shepard | birthPlace | New_Hampshire", "Alan Shepard | birth place | New Hampshire")
    assert {alike[name] for name in ("strict", "exact", "partial", "type")} == {1.0}
    assert alike["triple"] == 0.0  # whole-triple match compares the raw texts


def test_a_wrong_object_costs_a_third_of_strict_f1() -> None:
    counts = score_pair("aa | pp | cc", "aa | pp | xx")["strict"]
    assert (counts.correct, counts.missed, counts.spurious) == (2, 1, 1)
    assert _f1("aa | pp | cc", "aa | pp | xx")["strict"] == pytest.approx(2 / 3, abs=1e-4)


def test_a_partly_right_span_earns_half_credit_under_partial_and_full_under_type() -> None:
    f1 = _f1("ab cd | pp | cc", "ab cd ef | pp | cc")
    assert f1["strict"] == pytest.approx(2 / 3, abs=1e-4)
    assert f1["partial"] == pytest.approx(5 / 6, abs=1e-4)
    assert f1["type"] == 1.0


def test_swapped_subject_and_object_are_found_with_the_wrong_labels() -> None:
    strict, exact = (score_pair("aa | pp | cc", "cc | pp | aa")[k] for k in ("strict", "exact"))
    assert (strict.correct, strict.incorrect) == (1, 2)
    assert exact.correct == 3


def test_entries_pair_triples_by_best_match_not_by_order_and_pad_missing_ones() -> None:
    refs = [("A", "p", "B"), ("C", "q", "D")]
    shuffled = score_triples([refs], [list(reversed(refs))])
    assert shuffled["strict"].f1 == 1.0
    half = score_triples([refs], [[refs[1]]])  # one of two found: one perfect pair, one missed
    assert half["strict"].f1 == pytest.approx(0.5)
    spurious = score_triples([refs], [[*refs, ("E", "r", "F")]])
    assert spurious["strict"].precision == pytest.approx(2 / 3, abs=1e-4)
    assert score_triples([refs], [[]])["strict"].f1 == 0.0


def test_whole_triple_match_compares_raw_lowercased_triples() -> None:
    scores = score_triples([[("A_b", "p", "c")]], [[("a_B", "p", "C")]])
    assert scores["triple"].f1 == 1.0
    assert score_triples([[("A_b", "p", "c")]], [[("A b", "p", "c")]])["triple"].f1 == 0.0


# -- WebNLG files --------------------------------------------------------------------------------------------

BENCHMARK = """<?xml version='1.0' encoding='utf-8'?>
<benchmark><entries>
  <entry category="Airport" eid="Id7" size="2">
    <modifiedtripleset><mtriple>Aarhus_Airport | cityServed | Aarhus</mtriple>
      <mtriple>Aarhus | country | Denmark</mtriple></modifiedtripleset>
    <lex lid="1">Aarhus Airport serves the city of Aarhus in Denmark.</lex>
  </entry>
  <entry eid="Id8"><modifiedtripleset><mtriple>A | b | c</mtriple></modifiedtripleset></entry>
</entries></benchmark>
"""


def test_webnlg_file_gives_entries_with_texts_and_references(tmp_path: Path) -> None:
    path = tmp_path / "bench.xml"
    path.write_text(BENCHMARK)
    entries = read_webnlg(path)
    assert [e.eid for e in entries] == ["Id7"]  # an entry without a text cannot be evaluated
    assert entries[0].references == [("Aarhus_Airport", "cityServed", "Aarhus"), ("Aarhus", "country", "Denmark")]


@pytest.mark.parametrize("content", ["not xml at all", "<benchmark><entries/></benchmark>"])
def test_a_file_that_is_not_webnlg_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bench.xml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=str(path)):
        read_webnlg(path)


def test_candidates_are_written_in_the_challenge_format_one_entry_each(tmp_path: Path) -> None:
    entries = [
        WebNLGEntry(eid="Id1", text="t", references=[("a", "b", "c")]),
        WebNLGEntry(eid="Id2", text="t", references=[]),
    ]
    facts = Facts(
        facts=[
            Fact(statement="A pipe | here.", triple=_triple("x | y", "p", "z")),
            Fact(statement="No triple.", triple=None),
        ]
    )
    candidates = [candidate_triples(facts), candidate_triples(None)]
    write_candidates(entries, candidates, tmp_path / "out" / "candidates.xml")
    root = ET.parse(tmp_path / "out" / "candidates.xml").getroot()
    listing = root.findall("entries/entry")
    assert [e.get("eid") for e in listing] == ["Id1", "Id2"]
    assert [t.text for t in listing[0].iter("gtriple")] == ["x / y | p | z"]  # the separator never inside a part
    assert listing[1].find("generatedtripleset") is not None  # present even when empty: the script needs it


def _triple(subject: str, predicate: str, obj: str) -> Triple:
    return Triple(subject=subject, subject_type="other", predicate=predicate, object=obj, object_type="other")


# -- the gold set --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gold() -> list[GoldDocument]:
    return load_gold(default_gold_dir())


def test_gold_set_is_sound(gold: list[GoldDocument]) -> None:
    """Every item checkable against its own text: quotes verbatim, answers, keywords and triple ends in it."""
    assert 20 <= len(gold) <= 30
    for doc in gold:
        present = set(words(doc.text))
        assert set(doc.categories) <= set(DEFAULT_CATEGORIES), doc.id
        for question in doc.questions:
            assert _verbatim(question.evidence, doc.text), (doc.id, question.evidence)
            assert set(content_words(question.answer)) <= present, (doc.id, question.answer)
            assert question.question.endswith("?")
        assert doc.unanswerable and all(q.question.endswith("?") for q in doc.unanswerable)
        for keyword in doc.keywords:
            assert _norm(keyword) in _norm(doc.text), (doc.id, keyword)
        for fact in doc.facts:
            for end in (fact.triple[0], fact.triple[2]):
                assert set(content_words(end)) <= present, (doc.id, end)
        assert all(len(path) >= 2 for path in doc.taxonomy), doc.id


def test_a_malformed_gold_document_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('title = "x"\ntext = "y"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: categories"):
        load_gold(tmp_path)
    with pytest.raises(ConfigError, match="no gold documents"):
        load_gold(tmp_path / "missing")


def _perfect(doc: GoldDocument) -> ChunkExtraction:
    """What a perfect extractor would give for a gold document."""
    chunk = EvalItem(id=doc.id, text=doc.text).chunk()
    labels = categories_extractor(DEFAULT_CATEGORIES).schema(labels=doc.categories)
    sentences = [s.strip() + "." for s in doc.text.split(". ") if s.strip()]
    pairs = QAPairs(
        pairs=[QAPair(question=q.question, answer=q.answer, evidence=q.evidence) for q in doc.questions][:3]
    )
    judgements = [Judgement(answerable=True, answer=p.answer) for p in pairs.pairs]
    return ChunkExtraction(
        chunk=chunk,
        results={
            "facts": Facts(
                facts=[
                    Fact(statement=s[:160], triple=_triple(*f.triple))
                    for s, f in zip(sentences, doc.facts, strict=False)
                ][:6]
            ),
            "categories": labels,
            "taxonomy": Taxonomy(
                paths=[TopicPath(nodes=[TopicNode(name=n, importance=3) for n in path]) for path in doc.taxonomy]
            ),
            "keywords": Keywords(keywords=[Keyword(term=k, relevance=0.5) for k in doc.keywords[:8]]),
            "qa": pairs,
            "validate": Validations(
                items=[judge(p, j, doc.text) for p, j in zip(pairs.pairs, judgements, strict=True)]
            ),
        },
    )


def test_perfect_extractions_score_full_marks(gold: list[GoldDocument]) -> None:
    docs = gold[:4]
    outs = [_perfect(doc) for doc in docs]
    facts = sum(len(out.results["facts"].facts) for out in outs)  # type: ignore[attr-defined]
    answers = [Judgement(answerable=True, answer=q.answer) for d in docs for q in d.questions]
    answers += [Judgement(answerable=False, answer="not stated") for d in docs for _ in d.unanswerable]
    # Gold questions are asked in document order: each document's answerable ones, then its unanswerable ones.
    ordered = []
    for doc in docs:
        ordered += [Judgement(answerable=True, answer=q.answer) for q in doc.questions]
        ordered += [Judgement(answerable=False, answer="not stated") for _ in doc.unanswerable]
    scores = score_gold(docs, outs, [True] * facts, ordered, {"facts": Outcomes(first_try=4)})
    assert len(answers) == len(ordered)
    assert scores.facts_supported_lexical == 1.0 and scores.facts_supported_judge == 1.0
    assert scores.category_accuracy == scores.taxonomy_edge_f1 == scores.taxonomy_node_f1 == 1.0
    assert scores.keyword_precision == scores.qa_evidence_verbatim == scores.qa_round_trip == scores.qa_valid == 1.0
    assert scores.qa_near_duplicates == 0.0
    assert scores.judge_answerable_correct == scores.judge_unanswerable_refused == 1.0
    assert scores.triples["strict"].f1 > 0.6  # gold triples paired with the first sentences' facts, one each


def test_extractions_that_repeat_and_invent_score_low(gold: list[GoldDocument]) -> None:
    doc = gold[0]
    out = _perfect(doc)
    invented = Fact(statement="The moon is made of green cheese.", triple=None)
    out.results["facts"] = Facts(facts=[invented])
    out.results["keywords"] = Keywords(keywords=[Keyword(term="cheese", relevance=1.0)])
    same = QAPair(question=doc.questions[0].question, answer="x", evidence="not in the text at all, no")
    out.results["qa"] = QAPairs(pairs=[same, same])
    out.results["validate"] = Validations(items=[None, None])
    scores = score_gold([doc], [out], [False], [None] * (len(doc.questions) + len(doc.unanswerable)), {})
    assert scores.facts_supported_lexical == scores.facts_supported_judge == 0.0
    assert scores.keyword_precision == 0.0 and scores.qa_evidence_verbatim == 0.0
    assert scores.qa_near_duplicates == 0.5  # the second question repeats the first
    assert scores.qa_round_trip is None  # no verdict: nothing measured, not a zero
    assert scores.judge_answerable_correct == 0.0 and scores.judge_unanswerable_refused == 0.0


# -- the commands, on the tiny random-weight model (the plumbing; real models are the real-model tier) -----


def test_eval_webnlg_prints_json_and_writes_candidates(tiny_model_path: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench.xml"
    bench.write_text(BENCHMARK)
    args = ["eval", "webnlg", str(bench), "--model", str(tiny_model_path), "--json", "-q", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["entries"] == 1 and summary["seconds"] >= 0
    assert set(summary["scores"]) == {"strict", "exact", "partial", "type", "triple"}
    assert (tmp_path / "o" / "candidates.xml").is_file() and (tmp_path / "o" / "scores.json").is_file()


def test_eval_gold_runs_on_a_users_own_folder(tiny_model_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gold"
    folder.mkdir()
    (folder / "one.toml").write_text((default_gold_dir() / "20-prime-numbers.toml").read_text())
    result = CliRunner().invoke(cli, ["eval", "gold", str(folder), "--model", str(tiny_model_path), "--json", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["documents"] == 1 and report["figures"]["llm_calls"] > 0


def test_eval_of_a_file_that_is_not_webnlg_is_one_line_and_exit_3(tiny_model_path: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench.xml"
    bench.write_text("<html/>")
    result = CliRunner().invoke(cli, ["eval", "webnlg", str(bench), "--model", str(tiny_model_path)])
    assert result.exit_code == 3
    assert "bench.xml" in result.output and "Traceback" not in result.output


# -- against the official script's own numbers on the dev sample ---------------------------------------------

# What the official WebNLG 2020 script (Evaluation_script.py, run outside this repository) printed for two
# candidate files built from the dev sample's references: F1 under strict, exact, partial, type, and whole
# triples. The references themselves do not score 1: the script drops quote tokens from references but not
# from candidates, so a quoted object copied verbatim is a partial match.
OFFICIAL_F1 = {
    "perfect": {"strict": 0.98185, "exact": 0.98185, "partial": 0.98854, "type": 0.99522, "triple": 1.0},
    "perturbed": {"strict": 0.50764, "exact": 0.50955, "partial": 0.51266, "type": 0.51385, "triple": 0.37194},
}


def _perturbed(triples: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Drop the last triple, replace the first one's object with "unknown", lowercase every predicate."""
    kept = [(s, p.lower(), o) for s, p, o in triples[:-1]]
    return [(kept[0][0], kept[0][1], "unknown"), *kept[1:]] if kept else []


@pytest.mark.parametrize("variant", sorted(OFFICIAL_F1))
def test_scores_agree_with_the_official_script_on_the_dev_sample(webnlg_sample: Path, variant: str) -> None:
    references = [entry.references for entry in read_webnlg(webnlg_sample)]
    candidates = references if variant == "perfect" else [_perturbed(list(refs)) for refs in references]
    scores = score_triples(references, candidates)
    for name, official in OFFICIAL_F1[variant].items():
        assert scores[name].f1 == pytest.approx(official, abs=0.01), name
