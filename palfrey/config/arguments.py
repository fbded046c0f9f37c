"""The command line, generated from the option table.

Every option gets one flag: uvicorn's where uvicorn has one, otherwise one derived from
its path (`http2.max_concurrent_streams` -> `--http2-max-concurrent-streams`). Flags that
were not given do not appear in the CLI layer, so lower layers show through.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

from palfrey.config.registry import Option, options, section_doc
from palfrey.config.sources import LayerResult, Origin, Problem, put_text

PROG = "palfrey"
USAGE = "palfrey [OPTIONS] [APP]"
DESCRIPTION = (
    "Serve an ASGI application. APP is an import string such as main:app. Settings come "
    "from defaults, a manifest (--config), PALFREY_* environment variables and these "
    "flags, each overriding the one before."
)
EPILOG = (
    "Every option has a nested environment name PALFREY_<SECTION>__<KEY>; options that "
    "uvicorn has also keep uvicorn's flat name (PALFREY_HOST, PALFREY_WORKERS, ...). "
    "Lists take repeated flags, or JSON or comma-separated values in the environment."
)


@dataclass
class Meta:
    """Options that pick sources or actions instead of setting the Config."""

    config: str | None = None
    secrets_dir: str | None = None
    check_config: bool = False
    print_config: bool = False
    show_origins: bool = False
    print_schema: bool = False
    version: bool = False


@dataclass
class ParsedArgs:
    meta: Meta
    layer: LayerResult = field(default_factory=LayerResult)


def _metavar(option: Option) -> str:
    if option.choices:
        return "{" + ",".join(option.choices) + "}"
    annotation = str(option.field.annotation)
    for word, metavar in (
        ("Path", "PATH"),
        ("SecretStr", "SECRET"),
        ("ByteSize", "SIZE"),
        ("float", "SECONDS"),
        ("int", "INT"),
        ("dict", "JSON"),
    ):
        if word in annotation:
            return metavar
    return "TEXT"


def _help(option: Option) -> str:
    default = option.json_default
    if default is None or default == []:
        shown = "unset"
    elif isinstance(default, bool):
        shown = str(default).lower()
    elif isinstance(default, list):
        shown = ",".join(str(item) for item in default)
    else:
        shown = str(default) if default != "" else '""'
    env = ", ".join(option.env_names)
    return f"{option.description} [default: {shown}] [env: {env}]".replace("%", "%%")


def _dest(option: Option) -> str:
    return "opt:" + option.key


def build_parser(*, with_help: bool = True) -> argparse.ArgumentParser:
    """The parser of every flag. `with_help=False` leaves out the option descriptions and
    defaults, which only --help prints: reading them (the model's field docstrings, its
    dumped defaults) is wasted work for a start-up that is not asking for help."""
    import argparse  # imported when argv is parsed, not by every worker process

    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        allow_abbrev=False,
        add_help=False,
        exit_on_error=False,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("app", nargs="?", metavar="APP", help="The ASGI app, e.g. main:app.")
    meta = parser.add_argument_group("Configuration")
    meta.add_argument("-h", "--help", action="help", help="Show this message and exit.")
    meta.add_argument(
        "--config",
        metavar="PATH",
        help="Manifest file (.toml, .yaml, .json or pyproject.toml). [env: PALFREY_CONFIG]",
    )
    meta.add_argument(
        "--secrets-dir",
        metavar="DIR",
        help="Directory of one-value secret files named like options. [env: PALFREY_SECRETS_DIR]",
    )
    meta.add_argument(
        "--check-config",
        action="store_true",
        help="Validate everything (files, TLS, app import), bind nothing, exit 0 or 2.",
    )
    meta.add_argument(
        "--print-config", action="store_true", help="Print the effective config as TOML and exit."
    )
    meta.add_argument(
        "--show-origins",
        action="store_true",
        help="With --print-config, say where each value came from.",
    )
    meta.add_argument(
        "--print-schema",
        action="store_true",
        help="Print the JSON schema of the manifest and exit.",
    )
    meta.add_argument("--version", action="store_true", help="Show the version and exit.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in options():
        if option.cli_flag is None:
            continue
        section = option.section or "app"
        if section not in groups:
            title = f"[{section}]" if option.section else "Application"
            doc = section_doc(section) if option.section else "The app and how it is loaded."
            groups[section] = parser.add_argument_group(title, doc if with_help else None)
        _add(groups[section], option, with_help=with_help)
    return parser


def _add(group: argparse._ArgumentGroup, option: Option, *, with_help: bool) -> None:
    """One option's flag; uvicorn-named options also answer to their path-derived spelling
    (`--workers-count` for `--workers`), hidden from --help to keep it readable."""
    import argparse

    _add_flag(group, option, option.cli_flag, _help(option) if with_help else "")
    derived = option.derived_flag
    if derived != option.cli_flag and option.section is not None:
        _add_flag(group, option, derived, argparse.SUPPRESS)


def _add_flag(
    group: argparse._ArgumentGroup, option: Option, flag: str | None, help_text: str
) -> None:
    import argparse

    dest = _dest(option)
    assert flag is not None
    if option.kind == "bool" and option.value_style:
        group.add_argument(flag, dest=dest, nargs="?", const="true", metavar="BOOL", help=help_text)
    elif option.kind == "bool":
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=help_text)
    elif option.kind == "list":
        group.add_argument(flag, dest=dest, action="append", metavar="TEXT", help=help_text)
    else:
        group.add_argument(flag, dest=dest, metavar=_metavar(option), help=help_text)


def _known_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings]


def _split_unknown(
    argv: Sequence[str], parser: argparse.ArgumentParser
) -> tuple[list[str], list[Problem]]:
    """Take unknown flags (and the value after one) out of argv before argparse sees it.

    Otherwise `--wokers 2` leaves "2" behind to be read as APP, a second, wrong error.
    """
    known = set(_known_flags(parser))
    kept: list[str] = []
    problems: list[Problem] = []
    tokens = list(argv)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        flag = token.split("=", 1)[0]
        index += 1
        if token == "--":
            kept.extend(tokens[index - 1 :])
            break
        negative_number = flag[1:].replace(".", "", 1).isdigit()
        if not flag.startswith("-") or flag in known or flag == "-" or negative_number:
            kept.append(token)
            continue
        match = difflib.get_close_matches(flag, sorted(known), n=1, cutoff=0.75)
        hint = f" Did you mean {match[0]}?" if match else ""
        problems.append(Problem(f"unknown option {flag}.{hint}", Origin("cli", flag)))
        if "=" not in token and index < len(tokens) and not tokens[index].startswith("-"):
            index += 1  # its value
    return kept, problems


def parse_args(argv: Sequence[str]) -> ParsedArgs:
    """Turn argv into the CLI layer, collecting every unknown flag as a problem."""
    import argparse

    parser = build_parser(with_help=any(arg in ("-h", "--help") for arg in argv))
    kept, problems = _split_unknown(argv, parser)
    try:
        namespace, extras = parser.parse_known_args(kept)
    except argparse.ArgumentError as exc:  # e.g. a flag missing its value
        flag = exc.argument_name or ""
        problems.append(Problem(exc.message, Origin("cli", flag.split("/")[0])))
        namespace, extras = argparse.Namespace(), []
    values = vars(namespace)
    parsed = ParsedArgs(
        meta=Meta(**{k: v for k, v in values.items() if not k.startswith("opt:") and k != "app"})
    )
    parsed.layer.problems.extend(problems)
    for extra in extras:
        message = f"unexpected argument {extra!r}: only one APP can be given"
        parsed.layer.problems.append(Problem(message, Origin("cli", extra)))
    by_dest = {_dest(option): option for option in options()}
    if values.get("app") is not None:
        app = next(o for o in options() if o.path == ("app",))
        parsed.layer.values[app.path] = (values["app"], Origin("cli", "APP"))
    for dest, value in values.items():
        option = by_dest.get(dest)
        if option is not None:
            _put_cli(option, value, Origin("cli", option.cli_flag or dest), parsed.layer)
    return parsed


def _put_cli(option: Option, value: Any, origin: Origin, layer: LayerResult) -> None:
    if option.kind == "bool" and isinstance(value, bool):
        layer.values[option.path] = (value, origin)
    elif option.kind == "list":
        items: list[Any] = []
        for text in value:
            # uvicorn's --forwarded-allow-ips takes "a,b,c"; other list flags repeat.
            split = option.path == ("proxy", "forwarded_allow_ips")
            items.extend(text.split(",") if split else [text])
        layer.values[option.path] = (
            [item.strip() if isinstance(item, str) else item for item in items if item != ""],
            origin,
        )
    else:
        put_text(option, value, origin, layer)
