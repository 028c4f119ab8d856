"""Task queries are data: parsed by our own small language, never run as code."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from posturescreen.cli import app
from posturescreen.config.query import QueryError, evaluate, parse_query
from posturescreen.config.study import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent

TABLE = pd.DataFrame({
    "ch": [1, 0, 1, 0, 0, 1],
    "nsp": [0, 0, 1, 1, 0, 1],
    "age": [30.0, 45.0, np.nan, 50.0, 38.0, 41.0],
    "posture": ["bad", "good", "bad", "", "good", "bad"],
    "site": ["001", "1", "A", "B", "A", "001"],
    "age group": ["30s", "40s", "", "50s", "30s", "40s"],
})


def _mask(text: str) -> list[bool]:
    return evaluate(parse_query(text), TABLE).tolist()


def test_the_papers_queries_and_the_documented_ones():
    assert _mask("ch == 1") == [True, False, True, False, False, True]
    assert _mask("ch == 0 and nsp == 0") == [False, True, False, False, True, False]
    assert _mask("not (ch == 1)") == [False, True, False, True, True, False]
    assert _mask('posture == "bad"') == [True, False, True, False, False, True]
    assert _mask("age >= 40") == [False, True, False, True, False, True]  # NaN: not selected
    assert _mask("30 <= age < 45") == [True, False, False, False, True, True]
    assert _mask('site in ["001", "A"]') == [True, False, True, False, True, True]
    assert _mask("site not in ('1',)") == [True, False, True, True, True, True]
    assert _mask("`age group` == '30s' or ch == -1") == [True, False, False, False, True, False]


def test_missing_cells_never_match_not_even_under_not():
    # row 3's posture and row 2's age are missing (an empty text cell, a NaN)
    assert _mask('posture != "bad"') == [False, True, False, False, True, False]
    assert _mask('not (posture == "bad")') == [False, True, False, False, True, False]
    assert _mask('posture not in ["bad"]') == [False, True, False, False, True, False]
    assert _mask("age != 45") == [True, False, False, True, True, True]
    assert _mask("not (age >= 40)") == [True, False, False, False, True, False]
    assert _mask("not (not (age >= 40))") == _mask("age >= 40")
    # a row whose other comparison decides the query still matches (unknown or True)
    assert _mask("age >= 40 or ch == 1") == [True, True, True, True, False, True]
    assert _mask("not (age >= 40 and nsp == 1)") == [True, True, False, False, True, False]
    # `negatives: rest` is `not (positive)`: an empty label is never a negative
    cfg = load_config(None, ["negatives=rest",
                             "tasks=[{name: bad, positive: 'posture == \"bad\"'}]"])
    negatives = evaluate(parse_query(cfg.negative_query(cfg.tasks[0])), TABLE)
    assert negatives.tolist() == [False, True, False, False, True, False]


def test_empty_text_in_a_query_is_refused_since_it_could_never_match():
    for text in ('posture == ""', "posture in ['bad', ' ']"):
        with pytest.raises(QueryError, match="empty text never matches"):
            parse_query(text)


def _documented_queries() -> list[str]:
    """Every positive/negative/controls query written in README, configs/ and docs/."""
    found = []
    for path in [ROOT / "README.md", *ROOT.glob("configs/*.yaml"), *ROOT.glob("docs/*.md")]:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"""(?:positive|negative|controls): *("[^"\n]*"|'[^'\n]*')""",
                             text):
            found.append(m.group(1)[1:-1])
        # inline examples in the query-language section: `...`
        if path.name == "README.md":
            section = text.split("### Tasks", 1)[1].split("\n### ", 1)[0]
            found += re.findall(r"`([\w(][^`\n]*(?:==|!=|<=|>=|<|>| in )[^`\n]*[\w\])\"'])`",
                                section)
    return found


def test_every_documented_example_still_works():
    queries = _documented_queries()
    assert len(queries) >= 8, queries
    for text in queries:
        query = parse_query(text)
        if text != "site == 1":  # the README's example of a mistake, named at run time
            evaluate(query, TABLE)
    for config in ROOT.glob("configs/*.yaml"):
        load_config(config)  # queries are checked when a config loads


@pytest.mark.parametrize("text,token", [
    ('ch == 1 and @pd.io.common.os.system("id") == 0', "column 13 ('@')"),
    ("__import__('os').system('id') == 0", "at column 1"),
    ("ch.real == 1", "'ch.real' at column 1"),
    ("ch == len(nsp)", "'len(nsp)' at column 7"),
    ("ch == 1 & nsp == 1", "write `and`"),
    ("~(ch == 1)", "write `not`"),
    ("ch", "is a value, not a condition"),
    ("ch == [1, 2]", "'[1, 2]' at column 7"),
    ("ch in nsp", "must be a list"),
    ("ch == 1 if nsp == 1 else ch == 0", "at column 1"),
    ("lambda: ch == 1", "at column 1"),
    ("ch == 10**9", "'10**9' at column 7"),
    ("ch == None", "'None' at column 7"),
    ("(ch == 1", "never closed"),
    ("", "non-empty"),
    ("ch == 1\nimport os", "one line"),
    ("ch == 1 and " * 100 + "ch == 1", "longer than"),
    ("posture == 'é' and [x for x in ch] == 1", "at column 20"),  # characters, not bytes
])
def test_anything_else_is_refused_pointing_at_the_token(text, token):
    with pytest.raises(QueryError) as info:
        parse_query(text)
    assert token in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text,why", [
    ("chh == 1", "unknown column 'chh'; columns are: ch, nsp"),
    ("site == 1", "column 'site' holds text; put the value in quotes"),
    ("age > '40'", "column 'age' holds numbers"),
])
def test_queries_that_do_not_fit_the_manifest_are_named(text, why):
    with pytest.raises(QueryError, match=re.escape(why)):
        evaluate(parse_query(text), TABLE)


def test_code_in_a_config_is_refused_before_anything_runs(tmp_path, tiny_manifest,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran.txt"
    attack = f'ch == 1 and @pd.io.common.os.system("touch {marker}") == 0'
    config = tmp_path / "c.yaml"
    config.write_text(f"tasks:\n  - {{name: CH, positive: '{attack}'}}\n")
    runner = CliRunner()
    for args in (["--config", str(config)], ["--set", f"controls={attack}"]):
        result = runner.invoke(app, ["study", "--data", str(tiny_manifest), "--out",
                                     str(tmp_path / "run"), "--set", "models.pretrained=none",
                                     *args])
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and "'@'" in result.output
        assert not marker.exists()
        assert not (tmp_path / "run" / "config.yaml").exists()
    with pytest.raises(ConfigError, match=r"tasks\.0\.positive"):
        load_config(config)


# --- the evaluator agrees with pandas on the language it shares with pandas' query syntax
_columns = st.sampled_from(["ch", "nsp", "age"])
_numbers = st.sampled_from(["0", "1", "-1", "35", "40.5"])


@st.composite
def _comparisons(draw):
    if draw(st.booleans()):
        values = draw(st.lists(_numbers, min_size=1, max_size=3))
        op = draw(st.sampled_from(["in", "not in"]))
        return f"{draw(_columns)} {op} [{', '.join(values)}]"
    if draw(st.booleans()):
        return f"posture {draw(st.sampled_from(['==', '!=']))} " \
               f"{draw(st.sampled_from(['bad', 'good']))!r}"
    ops = draw(st.lists(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), min_size=1,
                        max_size=2))
    terms = [draw(st.one_of(_columns, _numbers)) for _ in range(len(ops) + 1)]
    if not any(t in ("ch", "nsp", "age") for t in terms):
        terms[0] = "age"
    return " ".join(t for pair in zip(terms, [*ops, ""], strict=True) for t in pair).strip()


_conditions = st.recursive(
    _comparisons(),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a}) and ({b})", inner, inner),
        st.builds(lambda a, b: f"({a}) or ({b})", inner, inner),
        st.builds(lambda a: f"not ({a})", inner)),
    max_leaves=6)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(_conditions)
def test_results_equal_pandas_query_on_the_shared_syntax(text):
    expected = TABLE.eval(text, engine="python").astype(bool)  # pandas as the reference
    ours = pd.Series(_mask(text))
    # rows without a missing cell: the same answer; a row with one matches only if pandas'
    # answer (one way of filling the unknown comparisons) matches too
    complete = TABLE[["ch", "nsp", "age", "posture"]].replace("", np.nan).notna().all(axis=1)
    assert ours[complete].tolist() == expected[complete].tolist()
    assert not (ours & ~expected).any()
