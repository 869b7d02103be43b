"""A griffe extension (mkdocs.yml, mkdocstrings' `extensions`): how slowlearn's docstrings read on the site.

The docstrings are written for `help()` and doctest, not for Markdown. Before mkdocstrings renders one:
- a `.. math::` block (the optimizers' update rules) becomes MathML, which browsers draw with no script
  and no network (latex2mathml); lines aligned on `&` become an aligned table;
- a doctest example (`>>>` lines and the output under them) becomes a fenced Python console block, where
  Markdown would otherwise read its brackets as links and join its lines into one paragraph;
- a table written as indented lines under a line ending in ":" (the Learner's slots, the callback events)
  stays a table: a text block, aligned as in `help()`.
"""
from __future__ import annotations

import re
import textwrap

import griffe
from latex2mathml.converter import convert

MATH = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*\n(?P<body>(?:(?P=indent)[ \t]+\S.*\n?)+)", re.M)
SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Yields|Raises|Examples?|Attributes|Notes?|Warns|Warnings?)"
                     r"\s*:")
TABLE = re.compile(r"^(?P<lead>(?!```|>>>|- )\S.*:)[ \t]*\n(?P<rows>(?:[ ]{2,}\S.*\n?)+)", re.M)
DOCTEST = re.compile(r"^(?P<indent>[ \t]*)>>> .*\n?(?:(?P=indent)\S.*\n?)*", re.M)


def mathml(latex: str) -> str:
    """`latex` (one equation, or lines aligned on `&` and ended by `\\\\`) as one line of display MathML."""
    if "&" in latex:
        latex = r"\begin{align*}" + latex + r"\end{align*}"
    return convert(latex, display="block")


def math_to_mathml(text: str) -> str:
    def replace(match: re.Match) -> str:
        latex = " ".join(line.strip() for line in match["body"].splitlines())
        return f"{match['indent']}{mathml(latex)}\n"
    return MATH.sub(replace, text)


def doctests_to_code(text: str) -> str:
    def replace(match: re.Match) -> str:
        indent, block = match["indent"], match[0].rstrip("\n")
        return f"{indent}```pycon\n{block}\n{indent}```\n"
    return DOCTEST.sub(replace, text)


def tables_to_text(text: str) -> str:
    def replace(match: re.Match) -> str:
        if SECTION.match(match["lead"]):  # a Google-style section: mkdocstrings renders it
            return match[0]
        rows = textwrap.dedent(match["rows"]).rstrip("\n")
        return f"{match['lead']}\n\n```text\n{rows}\n```\n"
    return TABLE.sub(replace, text)


class SiteDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = tables_to_text(doctests_to_code(math_to_mathml(obj.docstring.value)))
