"""MkDocs hooks of slowlearn's documentation site (mkdocs.yml `hooks:`).

- reference/cli.md is written from the command line's argparse definitions (`slowlearn.cli.parser()`), so
  the reference cannot drift from what `slowlearn --help` says.
- The build fails when a name of `slowlearn.__all__` is on no API reference page.
- A tutorial's table of contents points at its headings' real ids (mkdocs-jupyter builds the table from its own
  slugs, which drop code from a heading: "The Learner without `train`" got #the-learner-without, a dead link).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

CLI_PAGE = "reference/cli.md"
API_ENTRY = re.compile(r"^::: (slowlearn(?:\.\w+)+)\s*$", re.M)
HEADING_ID = re.compile(r"<h[1-6] id=\"([^\"]+)\"")


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    return files


def on_pre_build(config) -> None:
    documented = documented_paths(Path(config.docs_dir) / "reference")
    missing = [name for name in public_names() if not {f"slowlearn.{name}", defining_path(name)} & documented]
    if missing:
        raise PluginError(f"{len(missing)} public names of slowlearn.__all__ are on no page of docs/reference/: "
                          f"{', '.join(missing)}. Add a `::: slowlearn.NAME` line for each to the page of its "
                          f"package.")


def on_page_content(html: str, page, **kwargs) -> str:
    if page.file.src_uri.endswith(".ipynb"):
        point_toc_at_headings(page.toc, HEADING_ID.findall(html))
    return html


def point_toc_at_headings(toc, heading_ids: list[str]) -> None:
    """Give the table of contents' entries the ids of the page's headings, in order (one entry per heading)."""
    entries = [*walk(toc)]
    if len(entries) == len(heading_ids):
        for entry, heading_id in zip(entries, heading_ids):
            entry.id = heading_id


def walk(entries):
    for entry in entries:
        yield entry
        yield from walk(entry.children)


def public_names() -> list[str]:
    import slowlearn
    return list(slowlearn.__all__)


def defining_path(name: str) -> str:
    """Where the public `name` is defined, e.g. "slowlearn.train.train": the entry to write where the package
    has a module of the same name (`slowlearn.train` is the module to mkdocstrings, the function to Python)."""
    import slowlearn
    obj = getattr(slowlearn, name)
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', name)}"


def documented_paths(reference: Path) -> set[str]:
    """What the `::: slowlearn...` lines of the API reference pages document."""
    return {path for page in reference.glob("*.md") for path in API_ENTRY.findall(page.read_text())}


def cli_reference() -> str:
    """The command-line reference page, in Markdown, from `slowlearn.cli.parser()`."""
    from slowlearn.cli import parser
    main = parser()
    lines = ["# Command line", "",
             ("Generated from the command line's own definitions (`slowlearn.cli.parser()`); "
              "`slowlearn COMMAND --help` prints the same. `python -m slowlearn` works too."), "",
             "```text", usage(main), "```", ""]
    for name, command in subcommands(main).items():
        lines += [f"## slowlearn {name}", "", escape(command.description or ""), "",
                  "```text", usage(command), "```", "", *arguments_table(command), ""]
    return "\n".join(lines)


def subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def usage(p: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(p.prog, width=76)  # as wide as the page's code blocks
    formatter.add_usage(p.usage, p._actions, p._mutually_exclusive_groups)
    return formatter.format_help().strip()


def arguments_table(p: argparse.ArgumentParser) -> list[str]:
    rows = [a for a in p._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
    table = ["| Argument | What it does |", "| --- | --- |"]
    for action in rows:
        table.append(f"| {escape(argument_names(action))} | {escape(describe(action))} |")
    return table


def argument_names(action: argparse.Action) -> str:
    if not action.option_strings:  # a positional argument
        return f"`{action.metavar or action.dest}`"
    value = "" if action.nargs == 0 else " " + (action.metavar or action.dest.upper())
    if action.choices and not action.metavar:
        value = " {" + ",".join(map(str, action.choices)) + "}"
    return ", ".join(f"`{option}{value}`" for option in action.option_strings)


def describe(action: argparse.Action) -> str:
    text = (action.help or "") % {"default": action.default, "prog": "slowlearn"}
    if action.required and action.option_strings:
        text += " (required)"
    if action.nargs == "+":
        text += " (one or more)"
    return text


def escape(text: str) -> str:
    """`text` as it reads in a Markdown table cell: no line breaks, `|`, `*` and `<...>` kept literal."""
    return " ".join(text.split()).replace("|", "\\|").replace("*", "\\*").replace("<", "&lt;").replace(">", "&gt;")
